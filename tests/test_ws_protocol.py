"""The websocket protocol against ComfyUI's: the exact end-of-run sequences, timestamps,
``progress_state``, step previews only for clients that ask (and in the frame they asked for),
and SaveImageWebsocket's PNG frames.

ComfyUI's facts these tests hold Loom to (from its server, executor and front end):
- a run ends ``execution_success`` | ``execution_error`` | ``execution_interrupted``, then a
  ``status`` broadcast (the queue changed), then ``executing`` with node None;
- ``execution_start``, ``execution_cached`` and the three end events carry ``timestamp`` (ms);
- ``progress_state`` holds every non-pending node as {value, max, state, node_id, prompt_id,
  display_node_id, parent_node_id, real_node_id};
- binary frames: u32 type 1 + u32 format (1 JPEG, 2 PNG) + image; u32 type 4 + u32 length +
  JSON metadata + image, for clients that sent ``supports_preview_metadata: true``.
"""

from __future__ import annotations

import io
import json
import struct
import time

import pytest
from PIL import Image

from tests.server_fixture import LoomTestServer, WsClient

NODE_STATE_KEYS = {"value", "max", "state", "node_id", "prompt_id", "display_node_id",
                   "parent_node_id", "real_node_id"}
END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


def run_messages(ws: WsClient, pid: str, timeout: float = 30) -> list:
    """Every message the connection gets until ``executing`` None of ``pid``, then anything
    that follows within 0.2 s (there must be nothing of this prompt)."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        msg = ws.next(max(0.01, deadline - time.monotonic()))
        out.append(msg)
        if isinstance(msg, dict) and msg["type"] == "executing" and \
                msg["data"].get("node") is None and msg["data"].get("prompt_id") == pid:
            break
    after = ws.drain(0.2)
    assert not [m for m in after if not isinstance(m, dict) or
                m["data"].get("prompt_id") == pid], after
    return out


def sequence(messages: list, pid: str) -> list[str]:
    """The run's messages from execution_start on, progress_state left out (it is coalesced,
    so how many arrive depends on timing: tested on its own below)."""
    start = next(i for i, m in enumerate(messages)
                 if isinstance(m, dict) and m["type"] == "execution_start")
    out = []
    for m in messages[start:]:
        if isinstance(m, bytes):
            out.append("<binary>")
        elif m["type"] != "progress_state":
            node = m["data"].get("node", "")
            out.append(f"{m['type']} {node}" if m["type"] in ("executing", "executed")
                       else m["type"])
    return out


def by_type(messages: list, kind: str) -> list[dict]:
    return [m["data"] for m in messages if isinstance(m, dict) and m["type"] == kind]


def check_timestamps(messages: list) -> None:
    now = time.time() * 1000
    for m in messages:
        if isinstance(m, dict) and m["type"] in ("execution_start", "execution_cached",
                                                 *END_EVENTS):
            ts = m["data"]["timestamp"]
            assert isinstance(ts, int) and now - 60_000 < ts <= now + 1000, m


# -- the four ends of a run, exactly ------------------------------------------------------------

def test_fresh_then_fully_cached_run_sequences(loom_server: LoomTestServer):
    ws = loom_server.ws()
    prompt = {"1": {"class_type": "IntConst", "inputs": {"value": 5}},
              "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}}}
    pid = loom_server.queue_prompt(prompt, client_id=ws.client_id)
    messages = run_messages(ws, pid)
    assert sequence(messages, pid) == [
        "execution_start", "execution_cached", "executing 1", "executing 2", "executed 2",
        "execution_success", "status", "executing None"]
    check_timestamps(messages)
    # the status after the end already counts the prompt out, and a status (the claim) came
    # before the start
    assert by_type(messages, "status")[-1]["status"]["exec_info"]["queue_remaining"] == 0
    assert messages[0]["type"] == "status"
    # the history holds the same messages, with the same timestamps
    entry = loom_server.wait_history(pid)
    sent = {m["type"]: m["data"] for m in messages if isinstance(m, dict)}
    for event, data in entry["status"]["messages"]:
        assert data == sent[event]

    again = loom_server.queue_prompt(prompt, client_id=ws.client_id)
    messages = run_messages(ws, again)
    assert sequence(messages, again) == [
        "execution_start", "execution_cached", "executed 2", "execution_success", "status",
        "executing None"]
    assert sorted(by_type(messages, "execution_cached")[0]["nodes"]) == ["1", "2"]
    assert by_type(messages, "executed")[0]["output"] == {"value": [5]}
    check_timestamps(messages)


def failing_prompt(message: str) -> dict:
    """IntConst -> Fail (raises ``message``) -> Sink: a run that fails at node "2"."""
    return {
        "1": {"class_type": "IntConst", "inputs": {"value": 1}},
        "2": {"class_type": "Fail", "inputs": {"message": message, "value": ["1", 0]}},
        "3": {"class_type": "Sink", "inputs": {"value": ["2", 0]}},
    }


def sleeper(seconds: float) -> dict:
    """IntConst -> Sleep (reports progress while it sleeps) -> Sink."""
    return {
        "1": {"class_type": "IntConst", "inputs": {"value": 1}},
        "2": {"class_type": "Sleep", "inputs": {"seconds": seconds, "value": ["1", 0]}},
        "3": {"class_type": "Sink", "inputs": {"value": ["2", 0]}}}


def test_failed_run_sequence(loom_server: LoomTestServer):
    ws = loom_server.ws()
    pid = loom_server.queue_prompt(failing_prompt("no luck"), client_id=ws.client_id)
    messages = run_messages(ws, pid)
    assert sequence(messages, pid) == [
        "execution_start", "execution_cached", "executing 1", "executing 2", "execution_error",
        "status", "executing None"]
    check_timestamps(messages)
    [error] = by_type(messages, "execution_error")
    assert error["node_id"] == "2" and error["exception_message"] == "no luck"


def test_interrupted_run_sequence(loom_server: LoomTestServer):
    ws = loom_server.ws()
    pid = loom_server.queue_prompt(sleeper(60), client_id=ws.client_id)
    ws.wait_for("progress", prompt_id=pid)
    loom_server.post("/interrupt")
    run_messages(ws, pid)
    messages = ws.received  # all of them, also those wait_for skipped over
    seq = sequence(messages, pid)
    assert seq[:4] == ["execution_start", "execution_cached", "executing 1", "executing 2"]
    assert set(seq[4:-3]) == {"progress"}
    assert seq[-3:] == ["execution_interrupted", "status", "executing None"]
    check_timestamps(messages)
    [stopped] = by_type(messages, "execution_interrupted")
    assert stopped["node_id"] == "2" and stopped["executed"] == ["1"]
    last = by_type(messages, "progress_state")[-1]["nodes"]
    assert {n: s["state"] for n, s in last.items()} == {"1": "finished", "2": "running"}
    assert 0 < last["2"]["value"] < last["2"]["max"]


def test_prompt_failing_validation_at_claim_ends_the_same_way(loom_server: LoomTestServer):
    ws = loom_server.ws()
    blocker = loom_server.queue_prompt(sleeper(60), client_id=ws.client_id)
    ws.wait_for("progress", prompt_id=blocker)
    pid = loom_server.queue_prompt({"1": {"class_type": "Choose", "inputs": {"mode": "b"}},
                                    "2": {"class_type": "StrSink", "inputs": {"text": ["1", 0]}}},
                                   client_id=ws.client_id)
    loom_server.state.registry.classes.pop("Choose")  # the pack changed while it waited
    loom_server.post("/interrupt")
    messages = run_messages(ws, pid)
    assert sequence(messages, pid) == ["execution_start", "execution_error", "status",
                                       "executing None"]
    check_timestamps(messages)


def test_save_image_sends_no_progress(loom_server_factory):
    server = loom_server_factory(builtin=True)
    ws = server.ws()
    pid = server.queue_prompt({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 3,
                                                     "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                    "filename_prefix": "seq"}}},
        client_id=ws.client_id)
    messages = run_messages(ws, pid)
    assert sequence(messages, pid) == [
        "execution_start", "execution_cached", "executing 1", "executing 2", "executed 2",
        "execution_success", "status", "executing None"]
    assert len(by_type(messages, "executed")[0]["output"]["images"]) == 3


# -- progress_state -----------------------------------------------------------------------------

def check_progress_state(data: dict, pid: str) -> dict:
    assert set(data) == {"prompt_id", "nodes"} and data["prompt_id"] == pid
    for node_id, node in data["nodes"].items():
        assert set(node) == NODE_STATE_KEYS, node
        assert node["state"] in ("running", "finished", "error")
        assert node["node_id"] == node["display_node_id"] == node["real_node_id"] == node_id
        assert node["prompt_id"] == pid and node["parent_node_id"] is None
        assert 0 <= node["value"] <= node["max"]
    return data["nodes"]


def test_progress_state_follows_the_run(loom_server: LoomTestServer):
    ws = loom_server.ws()
    pid = loom_server.queue_prompt(sleeper(0.6), client_id=ws.client_id)
    messages = run_messages(ws, pid)
    states = [check_progress_state(d, pid) for d in by_type(messages, "progress_state")]
    assert states
    # while Sleep ran, its state said so, with its progress; the node before it was finished
    mid = [s for s in states if s.get("2", {}).get("state") == "running"
           and 0 < s["2"]["value"] < s["2"]["max"]]
    assert mid and all(s["1"]["state"] == "finished" for s in mid)
    # the last state, before execution_success, has every node finished
    end = [i for i, m in enumerate(messages) if isinstance(m, dict)
           and m["type"] == "execution_success"][0]
    last = [m for m in messages[:end] if isinstance(m, dict) and m["type"] == "progress_state"]
    final = last[-1]["data"]["nodes"]
    assert {n: s["state"] for n, s in final.items()} == {"1": "finished", "2": "finished",
                                                         "3": "finished"}
    assert final["2"]["value"] == final["2"]["max"] > 1

    # a cached re-run: the output node is finished at once, nothing runs
    again = loom_server.queue_prompt(sleeper(0.6), client_id=ws.client_id)
    states = [check_progress_state(d, again)
              for d in by_type(run_messages(ws, again), "progress_state")]
    assert states[-1] == {"3": {"value": 1, "max": 1, "state": "finished", "node_id": "3",
                                "prompt_id": again, "display_node_id": "3",
                                "parent_node_id": None, "real_node_id": "3"}}


def test_progress_state_marks_the_failing_node(loom_server: LoomTestServer):
    ws = loom_server.ws()
    pid = loom_server.queue_prompt(failing_prompt("x"), client_id=ws.client_id)
    messages = run_messages(ws, pid)
    final = check_progress_state(by_type(messages, "progress_state")[-1], pid)
    assert {n: s["state"] for n, s in final.items()} == {"1": "finished", "2": "error"}


def test_hub_sends_only_the_newest_progress_state_of_a_batch():
    """A 1,000-node prompt changes state 2,000 times; each message holds the whole state, so
    the hub keeps only the newest of those waiting (per client and prompt)."""
    from loom.engine.progress import ProgressLog
    from loom.server.ws import Hub

    class Conn:
        feature_flags: dict = {}

        def __init__(self, client_id):
            self.client_id, self.sent = client_id, []

        def start(self):
            pass

        def push(self, message):
            self.sent.append(message)

    hub = Hub()
    a, b = Conn("a"), Conn("b")
    hub.add(a)
    hub.add(b)
    log_a, log_b = ProgressLog("pa"), ProgressLog("pb")
    for i in range(500):
        log_a.start(str(i))
        hub.post_threadsafe("progress_state", {"prompt_id": "pa", "nodes": log_a.snapshot()},
                            "a")
        log_a.finish(str(i))
        hub.post_threadsafe("progress_state", {"prompt_id": "pa", "nodes": log_a.snapshot()},
                            "a")
        if i == 10:
            hub.post_threadsafe("executing", {"node": "10", "prompt_id": "pa"}, "a")
            log_b.start("x")
            hub.post_threadsafe("progress_state", {"prompt_id": "pb",
                                                   "nodes": log_b.snapshot()}, "b")
    hub._drain()
    sent = [json.loads(m) for m in a.sent]
    assert [m["type"] for m in sent] == ["executing", "progress_state"]
    nodes = sent[-1]["data"]["nodes"]
    assert len(nodes) == 500 and all(n["state"] == "finished" for n in nodes.values())
    assert [json.loads(m)["data"]["nodes"]["x"]["state"] for m in b.sent] == ["running"]


# -- step previews: only for those who ask -----------------------------------------------------

def painter(steps: int = 3) -> dict:
    return {"1": {"class_type": "Painter", "inputs": {"steps": steps}},
            "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}}}


def ask_for_previews(ws: WsClient) -> dict:
    """What ComfyUI's front end sends first; returns the server's answer."""
    ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True,
                                                    "supports_manager_v4_ui": True}})
    return ws.wait_for("feature_flags")["data"]


def frames_of(messages: list) -> list[bytes]:
    return [m for m in messages if isinstance(m, bytes)]


def check_red_jpeg(data: bytes) -> None:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.size == (96, 64)
    r, g, b = image.convert("RGB").getpixel((48, 32))
    assert r > 240 and g < 15 and b < 15


def test_plain_api_clients_get_no_previews(loom_server: LoomTestServer):
    ws = loom_server.ws()
    pid = loom_server.queue_prompt(painter(), client_id=ws.client_id)
    messages = run_messages(ws, pid)
    assert frames_of(messages) == []
    # progress is still reported, as JSON
    assert [p["value"] for p in by_type(messages, "progress")] == [1, 2, 3]


def test_a_client_that_announces_preview_metadata_gets_type_4_frames(loom_server: LoomTestServer):
    ws = loom_server.ws()
    assert ask_for_previews(ws) == {"supports_preview_metadata": True,
                                    "max_upload_size": 100 * 2**20}
    other = loom_server.ws()
    ask_for_previews(other)  # asked too, but the prompt is not its own
    pid = loom_server.queue_prompt(painter(), client_id=ws.client_id)
    messages = run_messages(ws, pid)
    frames = frames_of(messages)
    assert len(frames) == 3
    for frame in frames:
        kind, length = struct.unpack(">II", frame[:8])
        assert kind == 4
        meta = json.loads(frame[8:8 + length])
        assert meta == {"node_id": "1", "prompt_id": pid, "display_node_id": "1",
                        "parent_node_id": None, "real_node_id": "1", "image_type": "image/jpeg"}
        check_red_jpeg(frame[8 + length:])
    # each frame follows the progress of its step
    seq = sequence(messages, pid)
    assert seq[seq.index("executing 1") + 1:][:6] == ["progress", "<binary>"] * 3
    assert not frames_of(other.drain(0.3))
    assert loom_server.get("/features").json()["supports_preview_metadata"] is True


def test_loom_editor_flag_asks_for_type_1_frames(loom_server: LoomTestServer):
    """What Loom's editor sends: ``previews: true`` (it reads type-1 frames)."""
    ws = loom_server.ws()
    ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": False,
                                                    "previews": True}})
    ws.wait_for("feature_flags")
    pid = loom_server.queue_prompt(painter(), client_id=ws.client_id)
    frames = frames_of(run_messages(ws, pid))
    assert len(frames) == 3
    for frame in frames:
        assert struct.unpack(">II", frame[:8]) == (1, 1)
        check_red_jpeg(frame[8:])


def test_a_prompt_may_ask_for_previews_itself(loom_server: LoomTestServer):
    ws = loom_server.ws()
    other = loom_server.ws()
    for steps, method in ((2, "latent2rgb"), (3, "auto"), (4, "taesd")):
        pid = loom_server.queue_prompt(painter(steps), client_id=ws.client_id,
                                       extra_data={"preview_method": method})
        frames = frames_of(run_messages(ws, pid))
        assert len(frames) == steps, method
        for frame in frames:
            assert struct.unpack(">II", frame[:8]) == (1, 1)  # preview image, JPEG
            check_red_jpeg(frame[8:])
    assert not frames_of(other.drain(0.3))


def test_preview_method_none_and_default(loom_server_factory):
    on = loom_server_factory()
    ws = on.ws()
    ask_for_previews(ws)
    pid = on.queue_prompt(painter(), client_id=ws.client_id, extra_data={"preview_method": "none"})
    assert frames_of(run_messages(ws, pid)) == []
    pid = on.queue_prompt(painter(4), client_id=ws.client_id,
                          extra_data={"preview_method": "default"})
    assert len(frames_of(run_messages(ws, pid))) == 4

    # --preview-method none: no previews for those who only asked over the websocket, but a
    # prompt that names a method still gets them
    off = loom_server_factory(preview_method="none")
    ws = off.ws()
    ask_for_previews(ws)
    pid = off.queue_prompt(painter(), client_id=ws.client_id)
    assert frames_of(run_messages(ws, pid)) == []
    pid = off.queue_prompt(painter(4), client_id=ws.client_id,
                           extra_data={"preview_method": "latent2rgb"})
    assert [f[:4] for f in frames_of(run_messages(ws, pid))] == [struct.pack(">I", 4)] * 4


def test_previews_of_a_prompt_without_client_go_to_those_who_asked(loom_server: LoomTestServer):
    asked, plain = loom_server.ws(), loom_server.ws()
    ask_for_previews(asked)
    pid = loom_server.queue_prompt(painter())
    assert len(frames_of(run_messages(asked, pid))) == 3
    assert frames_of(run_messages(plain, pid)) == []


@pytest.mark.parametrize("method", ["LATENT2RGB", "fast", 3, True, ["auto"], {"a": 1}])
def test_bad_preview_method_is_refused(loom_server_shared: LoomTestServer, method):
    r = loom_server_shared.post("/prompt", json={"prompt": painter(),
                                                 "extra_data": {"preview_method": method}})
    assert r.status == 400
    assert "preview_method" in r.json()["error"]["message"]


def test_malformed_feature_flags_are_ignored(loom_server: LoomTestServer):
    ws = loom_server.ws()
    ws.send_json({"type": "feature_flags", "data": ["supports_preview_metadata"]})
    ws.wait_for("feature_flags")
    ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": "yes"}})
    ws.wait_for("feature_flags")
    pid = loom_server.queue_prompt(painter(), client_id=ws.client_id)
    assert frames_of(run_messages(ws, pid)) == []


# -- SaveImageWebsocket -------------------------------------------------------------------------

def test_save_image_websocket_frames_reach_the_client_that_asked_nothing(loom_server_factory):
    server = loom_server_factory(builtin=True)
    ws = server.ws()
    other = server.ws()
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 24, "height": 16,
                                                           "batch_size": 2, "color": 0x336699}},
              "ws": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}
    for _ in range(2):  # again: it always runs (a client is waiting for the frames)
        pid = server.queue_prompt(prompt, client_id=ws.client_id)
        messages = run_messages(ws, pid)
        seq = sequence(messages, pid)
        assert seq[-6:] == ["executing ws", "<binary>", "<binary>", "execution_success",
                            "status", "executing None"]
        for frame in frames_of(messages):
            assert struct.unpack(">II", frame[:8]) == (1, 2)  # image, PNG
            image = Image.open(io.BytesIO(frame[8:]))
            assert image.format == "PNG" and image.size == (24, 16)
            assert image.getpixel((5, 5)) == (0x33, 0x66, 0x99)
    assert not frames_of(other.drain(0.3))
    assert server.wait_history(pid)["outputs"] == {}

    # a client that declared preview metadata gets them as type 4, naming the node
    ask_for_previews(ws)
    pid = server.queue_prompt(prompt, client_id=ws.client_id)
    frames = frames_of(run_messages(ws, pid))
    assert len(frames) == 2
    kind, length = struct.unpack(">II", frames[0][:8])
    meta = json.loads(frames[0][8:8 + length])
    assert kind == 4 and meta["node_id"] == "ws" and meta["image_type"] == "image/png"
    assert Image.open(io.BytesIO(frames[0][8 + length:])).size == (24, 16)


def test_a_client_behind_loses_previews_but_not_the_images_it_waits_for():
    import asyncio

    from loom.server import ws as wsmod
    from loom.server.previews import ImageFrame

    class NeverReads:
        closed = False

        async def close(self, *args, **kwargs):
            pass

    async def go():
        hub = wsmod.Hub()
        conn = wsmod.Connection("c", NeverReads())  # no writer task: nothing is ever sent
        conn.feature_flags = {"supports_preview_metadata": True}
        hub.clients["c"] = frozenset({conn})
        big = b"\x00" * (1 << 20)
        for _ in range(8):  # 8 MB of previews: half are skipped
            hub.send("preview_image", ImageFrame(big, 1, "1", "p"), "c")
        before = conn.outbox_bytes
        assert before <= wsmod.PREVIEW_BACKLOG
        for _ in range(8):  # 8 MB of SaveImageWebsocket images: all kept
            hub.send("output_image", ImageFrame(big, 2, "2", "p", always=True), "c")
        assert conn.outbox_bytes > before + 8 * len(big)

    asyncio.run(go())
