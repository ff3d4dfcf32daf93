"""Real ComfyUI clients against Loom, on the default txt2img graph with the tiny SD checkpoint.

- comfy-api-simplified (PyPI) returns every binary websocket frame it sees as a result image,
  so step previews sent to plain API clients made it return 8×8 JPEG thumbnails instead of the
  saved image. Previews are opt-in now: it must get the PNG that SaveImage wrote.
- ComfyUI's websocket image example (``websockets_api_example_ws_images.py``: the
  ``websocket`` module of websocket-client, urllib, a SaveImageWebsocket node): the images
  arrive as binary PNG frames while that node is executing, identical to what SaveImage saves.
"""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image
from sd_fixtures import sd_cpu_only, sd_files  # noqa: F401  (fixtures)

WORKFLOWS = Path(__file__).resolve().parent / "data" / "workflows"


def default_graph(server, sd_files, steps: int = 12) -> dict:  # noqa: F811
    prompt = json.loads((WORKFLOWS / "default_txt2img.prompt.json").read_text())
    ckpt = prompt["4"]["inputs"]["ckpt_name"]
    server.put_model("checkpoints", ckpt, sd_files("sd1"))
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["3"]["inputs"]["steps"] = steps
    return prompt


def blocker() -> dict:
    return {"b1": {"class_type": "IntConst", "inputs": {"value": 1}},
            "b2": {"class_type": "Sleep", "inputs": {"seconds": 60, "value": ["b1", 0]}},
            "b3": {"class_type": "Sink", "inputs": {"value": ["b2", 0]}}}


def test_comfy_api_simplified_gets_the_saved_image_not_previews(loom_server_factory, sd_files):  # noqa: F811
    from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

    server = loom_server_factory(builtin=True)
    prompt = default_graph(server, sd_files)
    # Hold the queue so the client is connected before sampling starts (it queues first and
    # connects after): every step preview would reach it.
    watcher = server.ws()
    held = server.queue_prompt(blocker())
    watcher.wait_for("progress", prompt_id=held)

    api = ComfyApiWrapper(server.url)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(
        images=api.queue_and_wait_images(ComfyWorkflowWrapper(prompt), "Save Image")))
    thread.start()
    deadline = time.monotonic() + 30
    while True:  # its prompt waits, and its websocket is connected
        pending = server.get("/queue").json()["queue_pending"]
        if pending and pending[0][3].get("client_id") in server.state.hub.clients:
            break
        assert time.monotonic() < deadline, "comfy-api-simplified did not connect"
        time.sleep(0.02)
    server.post("/interrupt")
    thread.join(120)
    assert not thread.is_alive()

    [(name, data)] = result["images"].items()
    assert name.startswith("ComfyUI_") and name.endswith(".png")
    saved = server.settings.folders.output_dir / name
    assert data == saved.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.size == (64, 64)


def get_images(ws, server_url: str, prompt: dict, client_id: str) -> dict[str, list[bytes]]:
    """The example's protocol: queue with our client id, follow ``executing`` to know the
    current node, keep the binary frames that arrive while the websocket saver runs."""
    body = json.dumps({"prompt": prompt, "client_id": client_id}).encode()
    request = urllib.request.Request(server_url + "/prompt", data=body)
    prompt_id = json.loads(urllib.request.urlopen(request).read())["prompt_id"]
    output_images: dict[str, list[bytes]] = {}
    current_node = ""
    while True:
        out = ws.recv()
        if isinstance(out, str):
            message = json.loads(out)
            if message["type"] == "executing":
                data = message["data"]
                if data["prompt_id"] == prompt_id:
                    if data["node"] is None:
                        break
                    current_node = data["node"]
        elif current_node == "save_image_websocket_node":
            output_images.setdefault(current_node, []).append(out[8:])
    return output_images


def test_comfyui_websocket_image_example_protocol(loom_server_factory, sd_files):  # noqa: F811
    import websocket  # websocket-client, as ComfyUI's example uses

    server = loom_server_factory(builtin=True)
    prompt = default_graph(server, sd_files, steps=4)
    # SaveImage and the websocket saver on the same decoded image
    prompt["save_image_websocket_node"] = {"class_type": "SaveImageWebsocket",
                                           "inputs": {"images": ["8", 0]}}
    client_id = "example-client"
    ws = websocket.WebSocket()
    ws.connect(server.url.replace("http://", "ws://") + f"/ws?clientId={client_id}")
    try:
        images = get_images(ws, server.url, prompt, client_id)
        [png] = images["save_image_websocket_node"]
        # the same again: it always sends (a client waits for it)
        again = get_images(ws, server.url, prompt, client_id)
    finally:
        ws.close()
    assert again["save_image_websocket_node"] == [png]
    [saved] = server.settings.folders.output_dir.glob("ComfyUI_*.png")
    with Image.open(io.BytesIO(png)) as sent, Image.open(saved) as on_disk:
        assert sent.format == "PNG" and sent.size == (64, 64)
        assert np.array_equal(np.asarray(sent), np.asarray(on_disk))
