"""The workflow routes on the real server: /workflow/convert, /workflow/queue, /workflow/load."""

from __future__ import annotations

import copy
import io
import json

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from loom.graph.pnginfo import workflow_and_prompt_from_png
from tests.server_fixture import LoomTestServer

# A UI workflow of the test pack's nodes (tests/fixture_nodes): IntConst 1 and a primitive feed
# Add 3 (through a reroute), a bypassed Add in between, a note, a muted sink, and Sink 4.
WORKFLOW = {
    "last_node_id": 9, "last_link_id": 9,
    "nodes": [
        {"id": 1, "type": "IntConst", "mode": 0, "order": 0,
         "inputs": [{"name": "value", "type": "INT", "widget": {"name": "value"}, "link": None}],
         "outputs": [{"name": "INT", "type": "INT", "links": [1, 6]}], "widgets_values": [5]},
        {"id": 2, "type": "IntConst", "mode": 0, "order": 1,
         "inputs": [{"name": "value", "type": "INT", "widget": {"name": "value"}, "link": 7}],
         "outputs": [{"name": "INT", "type": "INT", "links": [2]}], "widgets_values": [0]},
        {"id": 7, "type": "PrimitiveNode", "mode": 0, "order": 2,
         "outputs": [{"name": "INT", "type": "INT", "widget": {"name": "value"}, "links": [7]}],
         "widgets_values": [37, "fixed"]},
        {"id": 5, "type": "Reroute", "mode": 0, "order": 3,
         "inputs": [{"name": "", "type": "*", "link": 1}],
         "outputs": [{"name": "", "type": "INT", "links": [3]}]},
        {"id": 6, "type": "Add", "mode": 4, "order": 4,
         "inputs": [{"name": "a", "type": "INT", "link": 3}, {"name": "b", "type": "INT", "link": 8}],
         "outputs": [{"name": "INT", "type": "INT", "links": [4]}]},
        {"id": 3, "type": "Add", "mode": 0, "order": 5,
         "inputs": [{"name": "a", "type": "INT", "link": 4}, {"name": "b", "type": "INT", "link": 2}],
         "outputs": [{"name": "INT", "type": "INT", "links": [5, 9]}]},
        {"id": 4, "type": "Sink", "mode": 0, "order": 6,
         "inputs": [{"name": "value", "type": "INT", "link": 5}]},
        {"id": 8, "type": "Sink", "mode": 2, "order": 7,
         "inputs": [{"name": "value", "type": "INT", "link": 9}]},
        {"id": 9, "type": "Note", "mode": 0, "order": 8, "widgets_values": ["adds 5 and 37"]},
    ],
    "links": [[1, 1, 0, 5, 0, "INT"], [2, 2, 0, 3, 1, "INT"], [3, 5, 0, 6, 0, "INT"],
              [4, 6, 0, 3, 0, "INT"], [5, 3, 0, 4, 0, "INT"], [6, 1, 0, 6, 1, "INT"],
              [7, 7, 0, 2, 0, "INT"], [8, 1, 0, 6, 1, "INT"], [9, 3, 0, 8, 0, "INT"]],
    "groups": [{"title": "math", "bounding": [0, 0, 500, 300]}],
    "config": {}, "extra": {}, "version": 0.4,
}

PROMPT = {
    "1": {"inputs": {"value": 5}, "class_type": "IntConst", "_meta": {"title": "IntConst"}},
    "2": {"inputs": {"value": 37}, "class_type": "IntConst", "_meta": {"title": "IntConst"}},
    "3": {"inputs": {"a": ["1", 0], "b": ["2", 0]}, "class_type": "Add", "_meta": {"title": "Add"}},
    "4": {"inputs": {"value": ["3", 0]}, "class_type": "Sink", "_meta": {"title": "Sink"}},
}


def workflow(**changes) -> dict:
    wf = copy.deepcopy(WORKFLOW)
    for node_id, fields in changes.items():
        node = next(n for n in wf["nodes"] if n["id"] == int(node_id.removeprefix("n")))
        node.update(fields)
    return wf


def png_with(texts: dict[str, str]) -> bytes:
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def assert_error(r, status: int, type: str | None = None) -> dict:
    assert r.status == status, r.text
    body = r.json()
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if type:
        assert body["error"]["type"] == type, body
    return body


# -- /workflow/convert --------------------------------------------------------------------------


def test_convert_returns_the_api_prompt(loom_server_shared: LoomTestServer):
    r = loom_server_shared.post("/workflow/convert", json=WORKFLOW)
    assert r.status == 200, r.text
    assert r.json() == PROMPT


def test_convert_accepts_a_wrapped_workflow_and_the_api_prefix(loom_server_shared: LoomTestServer):
    r = loom_server_shared.post("/api/workflow/convert", json={"workflow": WORKFLOW})
    assert r.status == 200, r.text
    assert r.json() == PROMPT


def test_convert_errors_have_the_prompt_error_shape(loom_server_shared: LoomTestServer):
    wf = workflow(n3={"type": "AddFromAPackNobodyInstalled"})
    body = assert_error(loom_server_shared.post("/workflow/convert", json=wf), 400, "invalid_workflow")
    assert "AddFromAPackNobodyInstalled" in body["error"]["message"]
    assert body["node_errors"]["3"]["class_type"] == "AddFromAPackNobodyInstalled"

    wf = workflow(n1={"mode": 2})  # muted, but IntConst 1 feeds Add 3 (through the reroute)
    body = assert_error(loom_server_shared.post("/workflow/convert", json=wf), 400, "invalid_workflow")
    assert "node 1 (IntConst)" in body["error"]["message"] and "muted" in body["error"]["message"]
    assert set(body["node_errors"]) == {"3"}


@pytest.mark.parametrize("body, type, words", [
    (b"{not json", "invalid_json", "Malformed JSON"),
    (b"", "invalid_json", "empty"),
    (b"[1, 2]", "invalid_json", "object"),
    (b"\xff\xfe", "invalid_json", "Malformed JSON"),
    (json.dumps({"hello": 1}).encode(), "invalid_workflow", "nodes"),
    (json.dumps({"workflow": [1]}).encode(), "invalid_workflow", "JSON object"),
    (json.dumps({"nodes": "x"}).encode(), "invalid_workflow", "nodes"),
    (json.dumps(PROMPT).encode(), "invalid_workflow", "/prompt"),
])
def test_convert_rejects_bad_bodies_with_400(loom_server_shared: LoomTestServer, body, type, words):
    r = loom_server_shared.post("/workflow/convert", data=body,
                                headers={"Content-Type": "application/json"})
    body = assert_error(r, 400, type)
    assert words in body["error"]["message"] + body["error"].get("details", "")


def test_convert_with_validate(loom_server_shared: LoomTestServer):
    wf = workflow(n1={"widgets_values": [5000]})  # IntConst's maximum is 1000
    assert loom_server_shared.post("/workflow/convert", json=wf).status == 200
    r = loom_server_shared.post("/workflow/convert?validate=1", json=wf)
    body = assert_error(r, 400, "prompt_outputs_failed_validation")
    assert body["node_errors"]["1"]["errors"][0]["type"] == "value_bigger_than_max"
    assert loom_server_shared.post("/workflow/convert?validate=1", json=WORKFLOW).status == 200


def test_convert_uses_the_servers_node_declarations(loom_server_shared: LoomTestServer):
    """Widget order and defaults come from this server's /object_info: Inc is (value, start)."""
    wf = {"nodes": [{"id": 1, "type": "Inc", "mode": 0, "widgets_values": [41]},
                    {"id": 2, "type": "Choose", "mode": 0, "widgets_values": []}], "links": []}
    r = loom_server_shared.post("/workflow/convert", json=wf)
    assert r.status == 200, r.text
    assert r.json()["1"]["inputs"] == {"start": 41}
    assert r.json()["2"]["inputs"] == {"mode": "a"}


# -- /workflow/queue ----------------------------------------------------------------------------


def test_queue_runs_the_converted_workflow(loom_server: LoomTestServer):
    ws = loom_server.ws()
    r = loom_server.post("/workflow/queue", json={"workflow": WORKFLOW, "client_id": ws.client_id,
                                                  "extra_data": {"note": "kept"}})
    assert r.status == 200, r.text
    answer = r.json()
    assert set(answer) >= {"prompt_id", "number", "node_errors"} and answer["node_errors"] == {}
    events = ws.prompt_events(answer["prompt_id"])
    assert events[-2]["type"] == "execution_success"
    entry = loom_server.wait_history(answer["prompt_id"])
    assert entry["outputs"] == {"4": {"value": [42]}}
    _, prompt_id, prompt, extra_data, outputs = entry["prompt"]
    assert prompt_id == answer["prompt_id"] and prompt == PROMPT and outputs == ["4"]
    # the workflow travels in extra_pnginfo, so image savers embed it (as the editor does)
    assert extra_data["extra_pnginfo"]["workflow"] == WORKFLOW
    assert extra_data["note"] == "kept" and extra_data["client_id"] == ws.client_id
    assert sorted(loom_server.ran(answer["prompt_id"])) == ["1", "2", "3", "4"]


def test_post_prompt_accepts_a_ui_workflow(loom_server: LoomTestServer):
    """The status page (and scripts) may POST /prompt {"workflow": ...} with no API prompt."""
    r = loom_server.post("/prompt", json={"workflow": WORKFLOW})
    assert r.status == 200, r.text
    entry = loom_server.wait_history(r.json()["prompt_id"])
    assert entry["outputs"] == {"4": {"value": [42]}}
    assert entry["prompt"][2] == PROMPT
    assert entry["prompt"][3]["extra_pnginfo"]["workflow"] == WORKFLOW
    bad = loom_server.post("/prompt", json={"workflow": workflow(n3={"type": "NoSuchNode"})})
    assert bad.status == 400 and bad.json()["error"]["type"] == "invalid_workflow"


def test_queue_keeps_a_workflow_the_client_put_in_extra_pnginfo(loom_server: LoomTestServer):
    r = loom_server.post("/workflow/queue", json={
        "workflow": WORKFLOW, "prompt_id": "mine-1",
        "extra_data": {"extra_pnginfo": {"workflow": {"client": "copy"}, "other": 1}}})
    assert r.status == 200, r.text
    assert r.json()["prompt_id"] == "mine-1"
    extra = loom_server.wait_history("mine-1")["prompt"][3]
    assert extra["extra_pnginfo"] == {"workflow": {"client": "copy"}, "other": 1}


def test_queue_accepts_an_api_prompt_as_the_workflow(loom_server: LoomTestServer):
    r = loom_server.post("/workflow/queue", json={"workflow": PROMPT})
    assert r.status == 200, r.text
    assert loom_server.wait_history(r.json()["prompt_id"])["outputs"] == {"4": {"value": [42]}}


def test_queue_errors(loom_server_shared: LoomTestServer):
    post = loom_server_shared.post
    assert "'workflow' is required" in assert_error(post("/workflow/queue", json={}), 400)["error"][
        "message"]
    assert_error(post("/workflow/queue", json={"workflow": "nodes"}), 400, "invalid_workflow")
    assert_error(post("/workflow/queue", json={"workflow": workflow(n4={"type": "Nope"})}), 400,
                 "invalid_workflow")
    # validation and field checks are POST /prompt's own
    body = assert_error(post("/workflow/queue", json={"workflow": workflow(n1={"widgets_values": [5000]})}),
                        400, "prompt_outputs_failed_validation")
    assert "1" in body["node_errors"]
    assert_error(post("/workflow/queue", json={"workflow": WORKFLOW, "client_id": 5}), 400)
    assert_error(post("/workflow/queue", json={"workflow": WORKFLOW, "extra_data": [1]}), 400)
    assert_error(post("/workflow/queue", data=b"[]", headers={"Content-Type": "application/json"}), 400)
    assert loom_server_shared.get("/queue").json()["queue_pending"] == []


# -- /workflow/load -----------------------------------------------------------------------------


def test_load_a_png_returns_its_workflow_and_the_converted_prompt(loom_server_shared: LoomTestServer):
    data = png_with({"workflow": json.dumps(WORKFLOW), "prompt": json.dumps(PROMPT)})
    r = loom_server_shared.post("/workflow/load", data=data, headers={"Content-Type": "image/png"})
    assert r.status == 200, r.text
    body = r.json()
    assert body["workflow"] == WORKFLOW and body["prompt"] == PROMPT
    assert body["prompt_source"] == "workflow" and "queued" not in body


def test_load_a_png_as_multipart_and_queue_it(loom_server: LoomTestServer):
    ws = loom_server.ws()
    form = aiohttp.FormData()
    form.add_field("image", png_with({"workflow": json.dumps(WORKFLOW)}), filename="made_by_loom.png",
                   content_type="image/png")
    form.add_field("queue", "true")
    form.add_field("client_id", ws.client_id)
    r = loom_server.post("/workflow/load", data=form)
    assert r.status == 200, r.text
    queued = r.json()["queued"]
    assert ws.prompt_events(queued["prompt_id"])[-2]["type"] == "execution_success"
    entry = loom_server.wait_history(queued["prompt_id"])
    assert entry["outputs"] == {"4": {"value": [42]}}
    assert entry["prompt"][3]["extra_pnginfo"]["workflow"] == WORKFLOW


def test_load_falls_back_to_the_embedded_prompt(loom_server: LoomTestServer):
    broken = workflow(n9={"type": "SomeFrontendThing", "outputs": [{"name": "x", "links": [9]}]})
    data = png_with({"workflow": json.dumps(broken), "prompt": json.dumps(PROMPT)})
    r = loom_server.post("/workflow/load?queue=1", data=data, headers={"Content-Type": "image/png"})
    assert r.status == 200, r.text
    body = r.json()
    assert body["prompt"] == PROMPT and body["prompt_source"] == "embedded_prompt"
    assert "SomeFrontendThing" in body["conversion_error"]["error"]["message"]
    assert loom_server.wait_history(body["queued"]["prompt_id"])["outputs"] == {"4": {"value": [42]}}

    only_prompt = png_with({"prompt": json.dumps(PROMPT)})
    body = loom_server.post("/workflow/load", data=only_prompt).json()
    assert body == {"workflow": None, "prompt": PROMPT, "prompt_source": "embedded_prompt"}


def test_load_a_workflow_json_file(loom_server_shared: LoomTestServer):
    form = aiohttp.FormData()
    form.add_field("file", json.dumps(WORKFLOW).encode(), filename="castle.json",
                   content_type="application/json")
    r = loom_server_shared.post("/workflow/load", data=form)
    assert r.status == 200, r.text
    assert r.json()["prompt"] == PROMPT
    r = loom_server_shared.post("/workflow/load", data=json.dumps(PROMPT))
    assert r.json()["prompt_source"] == "embedded_prompt"


def test_load_conversion_error_without_a_prompt_to_fall_back_on(loom_server_shared: LoomTestServer):
    data = png_with({"workflow": json.dumps(workflow(n4={"type": "Nope"}))})
    body = assert_error(loom_server_shared.post("/workflow/load", data=data), 400, "invalid_workflow")
    assert "'Nope'" in body["error"]["message"]


@pytest.mark.parametrize("data, type, words", [
    (png_with({}), "no_workflow", "no workflow"),
    (png_with({"workflow": "{oops"}), "invalid_png", "not valid JSON"),
    (png_with({"workflow": "{}"})[:60], "invalid_png", "truncated"),
    (b"GIF89a\x01\x00", "invalid_file", "neither a PNG nor JSON"),
    (b"", "invalid_file", "empty"),
    (b"[1, 2, 3]", "invalid_file", "neither a UI workflow"),
])
def test_load_rejects_bad_files_with_400(loom_server_shared: LoomTestServer, data, type, words):
    r = loom_server_shared.post("/workflow/load", data=data,
                                headers={"Content-Type": "application/octet-stream"})
    assert words in assert_error(r, 400, type)["error"]["message"]


def test_load_multipart_without_a_file(loom_server_shared: LoomTestServer):
    with aiohttp.MultipartWriter("form-data") as form:
        for name, value in (("queue", "1"), ("note", "no file here")):
            form.append(value).set_content_disposition("form-data", name=name)
    assert "no file" in assert_error(loom_server_shared.post("/workflow/load", data=form), 400)["error"][
        "message"]


def test_load_refuses_uploads_over_the_limit(loom_server_factory):
    server = loom_server_factory(max_upload_mb=1)
    big = png_with({"workflow": json.dumps({**WORKFLOW, "padding": "x" * (2 * 2**20)})})
    assert_error(server.post("/workflow/load", data=big, headers={"Content-Type": "image/png"}), 413)
    form = aiohttp.FormData()
    form.add_field("file", big, filename="big.png", content_type="image/png")
    assert_error(server.post("/workflow/load", data=form), 413)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(
    st.binary(max_size=64),
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                 lambda inner: st.one_of(st.lists(inner, max_size=4),
                                         st.dictionaries(st.sampled_from(
                                             ["workflow", "nodes", "links", "id", "type", "client_id",
                                              "extra_data", "inputs", "mode"]), inner, max_size=4)),
                 max_leaves=15).map(lambda v: json.dumps(v).encode())),
    path=st.sampled_from(["/workflow/convert", "/workflow/queue", "/workflow/load"]))
def test_no_body_gives_a_server_error(loom_server_shared: LoomTestServer, body, path):
    r = loom_server_shared.post(path, data=body, headers={"Content-Type": "application/json"})
    assert r.status < 500, r.text


# -- the whole loop with the real image nodes ---------------------------------------------------


def test_saved_png_loads_back_to_the_prompt_that_made_it(loom_server_factory):
    """Queue a workflow, let the real SaveImage write the PNG, fetch it with /view, load it:
    the prompt converted from its embedded workflow is the one that ran."""
    server = loom_server_factory(builtin=True)
    wf = {
        "nodes": [
            {"id": 1, "type": "EmptyImage", "mode": 0, "order": 1,
             "inputs": [{"name": "width", "type": "INT", "widget": {"name": "width"}, "link": 10}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
             "widgets_values": [64, 8, 1, 16746496]},
            {"id": 4, "type": "PrimitiveNode", "mode": 0, "order": 0,
             "outputs": [{"name": "INT", "type": "INT", "widget": {"name": "width"}, "links": [10]}],
             "widgets_values": [12, "fixed"]},
            {"id": 2, "type": "ImageInvert", "mode": 4, "order": 2,
             "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}]},
            {"id": 5, "type": "Reroute", "mode": 0, "order": 3,
             "inputs": [{"name": "", "type": "*", "link": 2}],
             "outputs": [{"name": "", "type": "IMAGE", "links": [3]}]},
            {"id": 3, "type": "SaveImage", "mode": 0, "order": 4,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 3}],
             "widgets_values": ["wf/roundtrip"]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 5, 0, "IMAGE"], [3, 5, 0, 3, 0, "IMAGE"],
                  [10, 4, 0, 1, 0, "INT"]],
        "version": 0.4,
    }
    r = server.post("/workflow/queue", json={"workflow": wf})
    assert r.status == 200, r.text
    entry = server.wait_history(r.json()["prompt_id"], timeout=60)
    assert entry["status"]["status_str"] == "success", entry["status"]
    ran = entry["prompt"][2]
    assert ran["1"]["inputs"] == {"width": 12, "height": 8, "batch_size": 1, "color": 16746496}
    assert ran["3"]["inputs"]["images"] == ["1", 0]  # through the reroute and the bypassed invert
    image = entry["outputs"]["3"]["images"][0]
    png = server.get("/view", params=image)
    assert png.status == 200
    with Image.open(io.BytesIO(png.body)) as img:
        assert img.size == (12, 8) and img.getpixel((0, 0))[:3] == (0xFF, 0x88, 0x00)

    embedded_workflow, embedded_prompt = workflow_and_prompt_from_png(png.body)
    assert embedded_workflow == wf and embedded_prompt == ran
    r = server.post("/workflow/load", data=png.body, headers={"Content-Type": "image/png"})
    assert r.status == 200, r.text
    assert r.json()["prompt"] == ran and r.json()["prompt_source"] == "workflow"
