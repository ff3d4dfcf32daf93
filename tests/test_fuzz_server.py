"""Fuzz the REAL server with hypothesis: random prompts, random JSON, random bytes and random
query strings must never produce a 5xx (a client mistake is always a clear 4xx).

The server runs every built-in node pack plus the test pack, with each node's ``run`` replaced
by a no-op: validation, fingerprints and the HTTP layer are the real code, but a random prompt
that happens to be valid cannot allocate a 16k x 16k image batch or write files while the test
runs. (What a prompt does when it runs is reported over the websocket, never as an HTTP status.)
"""

from __future__ import annotations

import http.client
import io
import json
import math
import re
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loom.nodeapi.loader import load_packs
from loom.nodeapi.registry import NodeRegistry
from tests.server_fixture import FIXTURE_NODES, LoomTestServer, make_settings

pytestmark = pytest.mark.slow  # fuzzing: ~10 s a test

FUZZ = settings(max_examples=200, deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
FUZZ_SMALL = settings(FUZZ, max_examples=80)


def _noop_registry() -> NodeRegistry:
    """Built-in and test packs, each class subclassed with a ``run`` that does nothing."""
    from loom.config import REPO_ROOT

    real = NodeRegistry()
    load_packs(real, REPO_ROOT / "nodes", builtin=True)
    load_packs(real, FIXTURE_NODES, builtin=False)
    reg = NodeRegistry()
    for name, cls in real.classes.items():
        count = len(cls.outputs)

        def run(self, _count=count, **kwargs):
            return tuple(None for _ in range(_count))

        reg.register(name, type(cls.__name__, (cls,), {"run": run, "__module__": cls.__module__}),
                     real.modules[name])
    return reg


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    server = LoomTestServer(make_settings(tmp_path_factory.mktemp("fuzz")), _noop_registry())
    (server.settings.folders.input_dir / "in.png").write_bytes(
        bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                      "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def object_info(fuzz_server) -> dict:
    info = fuzz_server.get("/object_info").json()
    assert "LoadImage" in info and "IntConst" in info, sorted(info)
    return info


def send(server: LoomTestServer, method: str, target: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.settings.port, timeout=60)
    try:
        conn.request(method, target, body=body,
                     headers={"Host": f"127.0.0.1:{server.settings.port}", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# Routes whose errors ComfyUI's front end shows as they are: "error" is the message itself.
STRING_ERROR_PATHS = ("/users", "/api/users")


def check(status: int, data: bytes, what: Any) -> None:
    assert status < 500, f"{status} for {what!r}: {data[:500]!r}"
    if 400 <= status < 500 and status != 404:
        err = json.loads(data)["error"]  # a clear message, in the usual shape
        if isinstance(what, tuple) and len(what) > 1 and what[1] in STRING_ERROR_PATHS:
            assert isinstance(err, str) and err, data[:300]
            return
        assert isinstance(err, dict) and err.get("message"), data[:300]


# -- strategies ---------------------------------------------------------------------------------

def _floats():
    return st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e308, 5e-324])


def _ints():
    return st.integers(-(2**70), 2**70) | st.integers(-3, 3)


json_scalars = st.none() | st.booleans() | _ints() | _floats() | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=20)


_PRIMITIVES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def _kind(spec: Any) -> Any:
    return spec[0] if isinstance(spec, list) and spec else spec


def _value_for(spec: Any) -> st.SearchStrategy:
    """A value that is usually right for an /object_info input spec, and sometimes not."""
    kind = _kind(spec)
    opts = spec[1] if isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(kind, list):  # combo: its choices
        good = st.sampled_from(kind) if kind else st.text(max_size=10)
    elif kind == "INT":
        lo, hi = _bound(opts, "min", -(2**63)), _bound(opts, "max", 2**63)
        lo, hi = int(min(lo, hi)), int(max(lo, hi))
        good = st.integers(lo, hi) | st.sampled_from([lo, hi, hi + 1, lo - 1])
    elif kind == "FLOAT":
        lo, hi = _bound(opts, "min", -1e18), _bound(opts, "max", 1e18)
        good = st.floats(float(min(lo, hi)), float(max(lo, hi))) | _floats()
    elif kind == "STRING":
        good = st.text(max_size=40) | st.sampled_from(["../../etc/passwd", "/etc/passwd", "%date:yyyy%",
                                                        "a/../../b", "C:\\x", "\x00", "in.png"])
    elif kind == "BOOLEAN":
        good = st.booleans()
    elif kind == "COMBO":
        choices = opts.get("options") or []
        good = st.sampled_from(choices) if choices else st.text(max_size=10)
    else:
        return json_values
    return st.one_of(good, good, good, json_values)


def _bound(opts: dict, key: str, default: float) -> float:
    value = opts.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else default


def _maybe(draw, good: st.SearchStrategy, bad: st.SearchStrategy, one_in: int = 8) -> Any:
    """Mostly ``good``; one time in ``one_in``, ``bad``."""
    return draw(bad if draw(st.integers(1, one_in)) == 1 else good)


@st.composite
def prompts(draw, info: dict) -> dict:
    classes = sorted(info)
    ids = draw(st.lists(st.sampled_from(["1", "2", "3", "4", "5", "10", "x", "", "1:2", "-1"])
                        | st.text(max_size=4), min_size=1, max_size=7, unique=True))
    prompt: dict[str, Any] = {}
    for node_id in ids:
        if draw(st.integers(0, 29)) == 0:
            prompt[node_id] = draw(json_values)  # not even a node
            continue
        class_type = _maybe(draw, st.sampled_from(classes), st.text(max_size=12) | json_scalars, 10)
        spec = info.get(class_type, {}).get("input", {}) if isinstance(class_type, str) else {}
        known = {**spec.get("required", {}), **spec.get("optional", {})}
        inputs: dict[str, Any] = {}
        for name, input_spec in known.items():
            choice = draw(st.integers(0, 19))
            if choice == 0:
                continue  # missing
            link_odds = 17 if _kind(input_spec) not in _PRIMITIVES and \
                not isinstance(_kind(input_spec), list) else 3
            if choice <= link_odds:  # a link: usually to a node of the prompt, any slot
                target = _maybe(draw, st.sampled_from(ids), st.text(max_size=3) | json_scalars)
                slot = _maybe(draw, st.integers(0, 2), st.integers(-3, 99) | json_scalars)
                link = [target, slot]
                inputs[name] = _maybe(draw, st.just(link),
                                      st.sampled_from([[target], [target, slot, 0], [], (target,)]))
            else:
                inputs[name] = draw(_value_for(input_spec))
        if draw(st.integers(0, 5)) == 0:
            inputs.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
        node: dict[str, Any] = {"class_type": class_type, "inputs": inputs}
        if draw(st.integers(0, 19)) == 0:
            node["inputs"] = draw(json_values)
        if draw(st.integers(0, 19)) == 0:
            del node[draw(st.sampled_from(["class_type", "inputs"]))]
        if draw(st.integers(0, 3)) == 0:
            node["_meta"] = draw(json_values)
        prompt[node_id] = node
    return prompt


@st.composite
def prompt_bodies(draw, info: dict) -> dict:
    body: dict[str, Any] = {"prompt": _maybe(draw, prompts(info), json_values, 20)}
    for key, good in [("client_id", st.text(max_size=10)), ("extra_data", st.dictionaries(
                          st.text(max_size=8), json_values, max_size=3)), ("front", st.booleans()),
                      ("number", _ints() | _floats()), ("prompt_id", st.text(max_size=40)),
                      ("partial_execution_targets", st.lists(st.text(max_size=3), max_size=3))]:
        if draw(st.integers(0, 3)) == 0:
            body[key] = _maybe(draw, good, json_values)
    return body


@st.composite
def ui_workflows(draw, info: dict) -> dict:
    """A litegraph "version 0.4" workflow, consistent (nodes, widget values, links between
    slots), then damaged in 0-3 random places."""
    classes = sorted(info)
    nodes: list[dict] = []
    for node_id in range(1, draw(st.integers(1, 6)) + 1):
        class_type = draw(st.sampled_from(classes + ["PrimitiveNode", "Reroute", "Note"]))
        spec = info.get(class_type, {}).get("input", {})
        known = {**spec.get("required", {}), **spec.get("optional", {})}
        widgets = [draw(_value_for(v)) for v in known.values()
                   if _kind(v) in _PRIMITIVES or isinstance(_kind(v), list)]
        links_in = [name for name, v in known.items()
                    if not (_kind(v) in _PRIMITIVES or isinstance(_kind(v), list))]
        outputs = info.get(class_type, {}).get("output", ["*"])
        nodes.append({
            "id": node_id, "type": class_type, "mode": draw(st.sampled_from([0, 0, 0, 2, 4])),
            "inputs": [{"name": n, "type": str(_kind(known[n])), "link": None} for n in links_in],
            "outputs": [{"name": str(t), "type": str(t), "links": []} for t in outputs],
            "widgets_values": widgets,
        })
    links: list[list] = []
    for node in nodes:
        for slot, inp in enumerate(node["inputs"]):
            if not draw(st.integers(0, 4)):
                continue
            origin = draw(st.sampled_from(nodes))
            if not origin["outputs"]:
                continue
            out_slot = draw(st.integers(0, len(origin["outputs"]) - 1))
            link_id = len(links) + 1
            links.append([link_id, origin["id"], out_slot, node["id"], slot, inp["type"]])
            inp["link"] = link_id
            origin["outputs"][out_slot]["links"].append(link_id)
    workflow: dict[str, Any] = {"last_node_id": len(nodes), "last_link_id": len(links),
                                "nodes": nodes, "links": links, "groups": [], "config": {},
                                "extra": {}, "version": 0.4}
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.integers(0, 3))
        if where == 0:
            key = draw(st.sampled_from(["nodes", "links", "extra", "version", "definitions"]))
            workflow[key] = draw(json_values)
        elif where == 1 and nodes:
            node = draw(st.sampled_from(nodes))
            key = draw(st.sampled_from(["id", "type", "mode", "inputs", "outputs", "widgets_values"]))
            node[key] = draw(json_values | st.integers(-2, 9))
        elif where == 2 and links:
            link = draw(st.sampled_from(links))
            link[draw(st.integers(0, len(link) - 1))] = draw(json_scalars | st.integers(-2, 9))
        elif nodes:
            node = draw(st.sampled_from(nodes))
            inputs = node["inputs"]  # may itself have been damaged above
            if isinstance(inputs, list) and inputs and all(isinstance(i, dict) for i in inputs):
                draw(st.sampled_from(inputs))["link"] = draw(json_scalars | st.integers(0, 9))
    return workflow


def _dumps(value: Any) -> bytes:
    # NaN/Infinity are not JSON, but Python writes and reads them: the server must cope.
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


# Shapes that once reached the client as a 500: numbers Python's int() or SQLite refuse, floats
# out of range, lone UTF-16 surrogates, names longer than the OS allows.
HURTFUL_VALUES = [b"9" * 5000, b"-" + b"9" * 400, b"1e400", b"-1e400", b"1" + b"0" * 60, b"2e-400",
                  b"18446744073709551616"]
HURTFUL_STRINGS = [b'"\\ud800"', b'"x\\udfff"', b'"\\udc00\\ud800"', b'"' + b"a" * 300 + b'.png"',
                   b'"' + b"d/" * 1100 + b'x.png"', b'"' + b"\\u00e9" * 200 + b'"']


@st.composite
def hurtful_json(draw, base: st.SearchStrategy) -> bytes:
    """A value from ``base`` with some leaves and keys swapped for the shapes above (as raw JSON
    text: Python cannot hold most of them as values)."""
    shapes: list[bytes] = []

    def mark(shape: bytes) -> str:
        shapes.append(shape)
        return f"@@HURT{len(shapes) - 1}@@"

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {(mark(draw(st.sampled_from(HURTFUL_STRINGS))) if draw(st.integers(0, 9)) == 0
                     else k): walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if draw(st.integers(0, 3)) == 0:
            return mark(draw(st.sampled_from(HURTFUL_VALUES + HURTFUL_STRINGS)))
        return value

    text = _dumps(walk(draw(base)))
    for i, shape in enumerate(shapes):
        text = text.replace(f'"@@HURT{i}@@"'.encode(), shape)
    return text


PNG_1PX = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
_PART_HEADERS = [b'Content-Disposition: form-data; name="image"; filename="a.png"',
                 b'Content-Disposition: form-data; name="image"; filename="' + b"a" * 300 + b'.png"',
                 b'Content-Disposition: form-data; name="image"; filename*=UTF-8\'\'%ff%fe',
                 b'Content-Disposition: form-data; name="file"; filename="w.json"',
                 b'Content-Disposition: form-data; name="original_ref"',
                 b'Content-Disposition: form-data; name="subfolder"',
                 b'Content-Disposition: inline\x00; name="image"', b"Content-Type: image/png",
                 b"Content-Type: multipart/mixed; boundary=y", b"Content-Transfer-Encoding: base64",
                 b"Content-Transfer-Encoding: rot13", b"Content-Encoding: gzip",
                 b"Content-Encoding: deflate", b"Content-Length: -1", b"X: " + b"h" * 9000,
                 b"no colon here", b""]
_PART_BODIES = [PNG_1PX, b'{"filename": "in.png"}', b'{"filename": "\\ud800"}', b"\xff\xfe",
                b'{"nodes": [], "links": []}', b"--x", b"a" * 300]


@st.composite
def multipart_bodies(draw) -> bytes:
    body = b""
    for _ in range(draw(st.integers(0, 3))):
        headers = draw(st.lists(st.sampled_from(_PART_HEADERS) | st.binary(max_size=40), max_size=4))
        content = draw(st.sampled_from(_PART_BODIES) | st.binary(max_size=60))
        body += b"--x\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + content + b"\r\n"
    return body + draw(st.sampled_from([b"--x--\r\n", b"", b"--x", b"--y--\r\n", b"--x--"]))


# -- the fuzz tests -----------------------------------------------------------------------------

def test_fuzz_random_prompts_never_5xx(fuzz_server, object_info):
    @FUZZ
    @given(prompt_bodies(object_info))
    def run(body):
        status, data = send(fuzz_server, "POST", "/prompt", _dumps(body),
                            {"Content-Type": "application/json"})
        check(status, data, body)
        if status == 200:
            assert "prompt_id" in json.loads(data)

    run()
    # The server is still healthy afterwards.
    assert fuzz_server.get("/object_info/IntConst").status == 200
    assert fuzz_server.post("/queue", json={"clear": True}).status == 200


def test_fuzz_random_ui_workflows_never_5xx(fuzz_server, object_info):
    @FUZZ
    @given(ui_workflows(object_info), st.sampled_from(["/workflow/convert?validate=1", "/workflow/queue",
                                                        "/workflow/load", "/workflow/convert"]))
    def run(workflow, target):
        body = workflow if "convert" in target or "load" in target else {"workflow": workflow}
        status, data = send(fuzz_server, "POST", target, _dumps(body),
                            {"Content-Type": "application/json"})
        check(status, data, (target, workflow))

    run()


def test_fuzz_random_json_to_every_post_route(fuzz_server):
    routes = sorted({(r.method, r.resource.canonical) for r in fuzz_server.app.router.routes()
                     if r.method in ("POST", "PUT", "PATCH", "DELETE")})
    assert ("POST", "/prompt") in routes

    @FUZZ
    @given(st.sampled_from(routes), json_values, st.sampled_from(["application/json", "text/plain", ""]))
    def run(route, value, ctype):
        method, template = route
        path = re.sub(r"\{(\w+)(?::[^}]*)?\}", "f.json", template)
        headers = {"Content-Type": ctype} if ctype else {}
        status, data = send(fuzz_server, method, path, _dumps(value), headers)
        check(status, data, (method, path, value))

    run()


def test_fuzz_huge_numbers_surrogates_and_long_names_never_5xx(fuzz_server, object_info):
    routes = sorted({(r.method, r.resource.canonical) for r in fuzz_server.app.router.routes()
                     if r.method in ("POST", "PUT", "PATCH", "DELETE")})

    @FUZZ
    @given(st.sampled_from(routes), st.data())
    def run(route, data):
        method, template = route
        path = re.sub(r"\{(\w+)(?::[^}]*)?\}", "f.json", template)
        base = prompt_bodies(object_info) if path.endswith("/prompt") else \
            ui_workflows(object_info) if "/workflow/" in path else json_values
        body = data.draw(hurtful_json(base))
        status, answer = send(fuzz_server, method, path, body, {"Content-Type": "application/json"})
        check(status, answer, (method, path, body[:300]))

    run()
    for route in ("/history", "/queue", "/settings", "/userdata?dir=workflows"):
        assert fuzz_server.get(route).status < 500, route


@FUZZ
@given(path=st.sampled_from(["/upload/image", "/upload/mask", "/workflow/load", "/api/upload/image"]),
       body=multipart_bodies(), fields=st.sampled_from([b"", b"overwrite=1"]))
def test_fuzz_multipart_garbage_never_5xx(fuzz_server, path, body, fields):
    status, data = send(fuzz_server, "POST", path, body,
                        {"Content-Type": "multipart/form-data; boundary=x"})
    check(status, data, (path, body[:300]))


@st.composite
def image_files(draw) -> bytes:
    """Small files that decode to anything from a few pixels to gigabytes: animated GIFs with a
    big canvas, APNG/WebP/TIFF animations, other formats Pillow knows, truncated or damaged."""
    from PIL import Image

    kind = draw(st.sampled_from(["gif_bomb", "animated", "still", "other"]))
    if kind == "gif_bomb":
        from tests.test_untrusted_images import gif_bomb

        data = gif_bomb(draw(st.integers(1, 20000)), draw(st.integers(1, 20000)),
                        draw(st.integers(1, 300)))
    else:
        fmt = draw(st.sampled_from(["PNG", "GIF", "WEBP", "TIFF"] if kind == "animated" else
                                   ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"] if kind == "still"
                                   else ["EPS", "PPM", "ICO", "TGA", "PCX", "QOI", "DDS", "PDF"]))
        size = (draw(st.integers(1, 64)), draw(st.integers(1, 64)))
        mode = draw(st.sampled_from(["RGB", "RGBA", "L", "1", "P"]))
        if fmt in ("JPEG", "EPS", "PDF", "PCX", "DDS", "QOI", "ICO") and mode not in ("RGB", "L"):
            mode = "RGB"
        frames = [Image.new(mode, size, i * 30) for i in range(draw(st.integers(1, 4)))]
        buf = io.BytesIO()
        extra = {"save_all": True, "append_images": frames[1:]} if kind == "animated" else {}
        try:
            frames[0].save(buf, format=fmt, **extra)
        except (OSError, ValueError, KeyError):
            frames[0].convert("RGB").save(buf, format="PNG")
        data = buf.getvalue()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif damage == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    return data


def test_fuzz_image_files_never_5xx(fuzz_server):
    @FUZZ_SMALL
    @given(image_files(), st.sampled_from(["/upload/image", "/upload/mask"]))
    def run(data, path):
        boundary = "fuzzboundary"
        parts = [(b'Content-Disposition: form-data; name="image"; filename="f.png"', data)]
        if path == "/upload/mask":
            parts.append((b'Content-Disposition: form-data; name="original_ref"',
                          b'{"filename": "in.png", "type": "input"}'))
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + head + b"\r\n\r\n" + content
                        + b"\r\n" for head, content in parts) + b"--" + boundary.encode() + b"--\r\n"
        status, answer = send(fuzz_server, "POST", path, body,
                              {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        check(status, answer, (path, data[:100]))
        # Whatever sits in input/ (uploaded or copied there), LoadImage must say no clearly.
        (fuzz_server.settings.folders.input_dir / "fuzzed.png").write_bytes(data)
        for node, extra in (("LoadImage", {}), ("LoadImageMask", {"channel": "red"})):
            prompt = {"1": {"class_type": node, "inputs": {"image": "fuzzed.png", **extra}},
                      "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
            status, answer = send(fuzz_server, "POST", "/prompt", _dumps({"prompt": prompt}),
                                  {"Content-Type": "application/json"})
            check(status, answer, (node, data[:100]))

    run()
    fuzz_server.post("/queue", json={"clear": True})


@FUZZ_SMALL
@given(body=st.binary(max_size=300) | st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
       path=st.sampled_from(["/prompt", "/queue", "/history", "/interrupt", "/upload/image",
                             "/settings", "/userdata/w.json", "/login", "/free", "/api/prompt"]),
       ctype=st.sampled_from(["application/json", "multipart/form-data; boundary=x",
                              "multipart/form-data", "application/x-www-form-urlencoded", "",
                              "text/plain; charset=nonsense"]))
def test_fuzz_random_bytes_never_5xx(fuzz_server, body, path, ctype):
    status, data = send(fuzz_server, "POST", path, body, {"Content-Type": ctype} if ctype else {})
    check(status, data, (path, body))


_query_text = st.text(max_size=20) | st.sampled_from(["..", "../..", "/etc/passwd", "%2e%2e", "\x00",
                                                       "C:\\", "output", "input", "temp", "-1",
                                                       "99999999999999999999", "nan", "1e400",
                                                       "a" * 300, "a" * 300 + ".png", "d/" * 300, "e" * 256,
                                                       "9" * 2000, "%ED%A0%80"])


@FUZZ
@given(route=st.sampled_from(["/view", "/history", "/api/view", "/userdata", "/v2/userdata",
                              "/queue", "/prompt", "/object_info", "/models/checkpoints",
                              "/system_stats", "/embeddings", "/extensions", "/ws"]),
       params=st.dictionaries(st.sampled_from(["filename", "subfolder", "type", "max_items", "offset",
                                               "dir", "path", "recurse", "split", "full_info",
                                               "preview", "channel", "clientId"]) | st.text(max_size=6),
                              _query_text, max_size=5),
       raw_tail=st.text(max_size=10))
def test_fuzz_random_queries_never_5xx(fuzz_server, route, params, raw_tail):
    query = urlencode({k: v for k, v in params.items()}, errors="surrogatepass") \
        if all(_encodable(k) and _encodable(v) for k, v in params.items()) else ""
    target = f"{route}?{query}&{quote(raw_tail.encode('utf-8', 'surrogatepass'), safe='=&%')}"
    status, data = send(fuzz_server, "GET", target)
    check(status, data, target)
    assert b"root:x:" not in data


@FUZZ_SMALL
@given(path=st.text(max_size=30))
def test_fuzz_random_paths_never_5xx(fuzz_server, path):
    target = "/" + quote(path.encode("utf-8", "surrogatepass"), safe="/%?=&")
    for method in ("GET", "POST", "DELETE"):
        status, data = send(fuzz_server, method, target, b"{}")
        check(status, data, (method, target))
        assert b"root:x:" not in data


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def test_fuzz_websocket_messages_do_not_break_the_server(fuzz_server):
    messages = [json.dumps(v, allow_nan=True) for v in [None, 1, [], {"type": 5}, {"type": "x" * 10000},
                                                         {"type": ["feature_flags"]}]]
    messages += ["{", "\x00", "", "nan", "[" * 100_000 + "]" * 100_000, '{"a":' * 100_000]

    async def go():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{fuzz_server.url}/ws?clientId=fuzz") as ws:
                assert (await ws.receive_json(timeout=10))["type"] == "status"
                for m in messages:
                    await ws.send_str(m)
                await ws.send_bytes(b"\xff\x00binary")
                await ws.send_str(json.dumps({"type": "feature_flags", "data": {}}))
                # Messages are handled in order: the answer to this last one proves the connection
                # survived all the others.
                while True:
                    msg = await ws.receive_json(timeout=10)
                    if msg["type"] == "feature_flags":
                        return True

    # On the client's own loop thread: another test (Playwright's sync API) may leave a loop
    # running on this one.
    assert fuzz_server._loop.run(go(), 60)
    assert fuzz_server.get("/queue").status == 200
