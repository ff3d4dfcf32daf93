"""The default txt2img graph end to end through the HTTP API: POST /prompt (with the UI workflow
as extra_pnginfo, as the editor sends it), progress over the websocket, a PNG in output/ whose
text chunks hold the prompt and the workflow, fetched back through /view.

The checkpoint is the tiny SD 1.x model of ``sd_fixtures`` under the default graph's file name.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
from PIL import Image
from sd_fixtures import sd_cpu_only, sd_files  # noqa: F401  (fixtures)

WORKFLOWS = Path(__file__).resolve().parent / "data" / "workflows"


def test_default_txt2img_graph_over_http(loom_server_factory, sd_files):  # noqa: F811
    server = loom_server_factory(builtin=True)
    prompt = json.loads((WORKFLOWS / "default_txt2img.prompt.json").read_text())
    workflow = json.loads((WORKFLOWS / "default_txt2img.json").read_text())
    ckpt = prompt["4"]["inputs"]["ckpt_name"]
    server.put_model("checkpoints", ckpt, sd_files("sd1"))
    # The default graph as the editor sends it, at a smaller size to keep the test quick.
    prompt["5"]["inputs"].update(width=256, height=256)

    ws = server.ws()
    # the editor asks for step previews, as ComfyUI's front end does
    ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    ws.wait_for("feature_flags")
    r = server.post("/prompt", json={"prompt": prompt, "client_id": ws.client_id,
                                     "extra_data": {"extra_pnginfo": {"workflow": workflow}}})
    assert r.status == 200, r.text
    prompt_id = r.json()["prompt_id"]
    events = ws.prompt_events(prompt_id, timeout=120)
    entry = server.wait_history(prompt_id, timeout=120)
    assert entry["status"]["status_str"] == "success", entry["status"]

    progress = [e["data"] for e in events if e["type"] == "progress" and e["data"]["node"] == "3"]
    assert [(p["value"], p["max"]) for p in progress] == [(i, 20) for i in range(1, 21)]
    # a live preview per step: ComfyUI's binary frame with metadata (event 4, the JSON
    # length, JSON naming the sampler node, then a JPEG), latent-sized
    frames = [m for m in ws.received if isinstance(m, bytes)]
    assert len(frames) == 20
    for frame in frames:
        kind, length = struct.unpack(">II", frame[:8])
        meta = json.loads(frame[8:8 + length])
        assert kind == 4 and meta["node_id"] == "3" and meta["image_type"] == "image/jpeg"
    assert Image.open(io.BytesIO(frames[-1][8 + length:])).size == (32, 32)

    [saved] = entry["outputs"]["9"]["images"]
    assert saved["type"] == "output" and saved["filename"].startswith("ComfyUI_")
    view = server.get("/view", params=saved)
    assert view.status == 200 and view.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(view.body)) as png:
        png.load()
        assert png.size == (256, 256)
        assert json.loads(png.text["prompt"]) == prompt
        assert json.loads(png.text["workflow"]) == workflow
        pixels = np.asarray(png)
    assert pixels.shape == (256, 256, 3) and pixels.std() > 0
