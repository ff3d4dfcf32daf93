"""The mask editor: open it from LoadImage, paint (undo, erase), save (the server stores the
image with the mask as alpha), and queue an inpaint graph that uses it."""

from __future__ import annotations

import io

import numpy as np
from editor_helpers import (
    CKPT,
    install_checkpoint,
    nodes,
    open_editor,
    open_graph,
    show_node,
    wait_event,
    watch_events,
)
from PIL import Image
from sd_fixtures import sd_cpu_only, sd_files  # noqa: F401  (fixtures)

_PAINTED = """() => { const c = document.querySelector('[data-testid=mask-canvas]');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"""


def test_paint_a_mask_and_queue_an_inpaint_graph(editor_server, page, sd_files):  # noqa: F811
    server = editor_server()
    install_checkpoint(server, sd_files)
    photo = np.zeros((64, 64, 3), np.uint8)
    photo[..., 0] = np.arange(64)[None, :] * 4
    photo[..., 1] = 120
    server.settings.folders.input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo).save(server.settings.folders.input_dir / "photo.png")
    open_editor(page, server)
    page.keyboard.press("r")
    page.wait_for_function("() => JSON.stringify(window.loom.app.info.LoadImage.input.required.image[0])"
                           ".includes('photo.png')")
    ids = open_graph(page, [
        ("CheckpointLoaderSimple", {"ckpt_name": CKPT}),
        ("CLIPTextEncode", {"text": "a red apple"}),
        ("CLIPTextEncode", {"text": ""}),
        ("LoadImage", {"image": "photo.png"}),
        ("VAEEncodeForInpaint", {"grow_mask_by": 0}),
        ("KSampler", {"steps": 2, "seed": 1, "control_after_generate": "fixed"}),
        ("VAEDecode", {}),
        ("SaveImage", {}),
    ], [(0, 0, 5, "model"), (0, 1, 1, "clip"), (0, 1, 2, "clip"), (1, 0, 5, "positive"),
        (2, 0, 5, "negative"), (3, 0, 4, "pixels"), (0, 2, 4, "vae"), (3, 1, 4, "mask"),
        (4, 0, 5, "latent_image"), (5, 0, 6, "samples"), (0, 2, 6, "vae"), (6, 0, 7, "images")],
        name="Inpaint")
    load_id = ids[3]

    # Right-click the LoadImage node: "Open in mask editor".
    show_node(page, load_id)
    title = page.evaluate("""(id) => { const app = window.loom.app, n = app.graph.getNodeById(id);
      const r = app.canvas.canvas.getBoundingClientRect(), {scale, offset} = app.canvas.ds;
      return [r.left + (n.pos[0] + 40 + offset[0]) * scale,
              r.top + (n.pos[1] - 15 + offset[1]) * scale]; }""",
                          load_id)
    page.mouse.click(title[0], title[1], button="right")
    page.click(".litecontextmenu .litemenu-entry:has-text('Open in mask editor')")
    page.wait_for_selector("[data-testid=mask-editor]")
    canvas = page.locator("[data-testid=mask-canvas]")
    page.wait_for_function("() => document.querySelector('[data-testid=mask-canvas]').width === 64")
    page.evaluate("() => { const s = document.querySelector('[data-testid=mask-brush]');"
                  " s.value = 6; s.dispatchEvent(new Event('input')); }")
    box = canvas.bounding_box()

    def drag(x0, y0, x1, y1):  # fractions of the image
        page.mouse.move(box["x"] + box["width"] * x0, box["y"] + box["height"] * y0)
        page.mouse.down()
        for t in np.linspace(0, 1, 8):
            page.mouse.move(box["x"] + box["width"] * (x0 + (x1 - x0) * t),
                            box["y"] + box["height"] * (y0 + (y1 - y0) * t))
        page.mouse.up()

    drag(0.1, 0.1, 0.9, 0.1)  # a stroke along the top, then undone
    assert page.evaluate(_PAINTED) > 0
    page.click("[data-testid=mask-undo]")
    assert page.evaluate(_PAINTED) == 0
    drag(0.3, 0.5, 0.7, 0.5)  # the stroke that stays: across the middle
    page.click("[data-testid=mask-erase]")
    drag(0.65, 0.5, 0.75, 0.5)  # erase its right end
    page.click("[data-testid=mask-save]")
    page.wait_for_selector("[data-testid=mask-editor]", state="detached")

    value = [n for n in nodes(page) if n["id"] == load_id][0]["widgets"]["image"]
    assert value.startswith("clipspace/mask-") and value.endswith(".png")
    with Image.open(server.settings.folders.input_dir / value) as saved:
        rgba = np.asarray(saved.convert("RGBA"))
    alpha = rgba[..., 3]
    assert alpha[32, 32] == 0, "painted: transparent (masked)"
    assert alpha[5, 5] == 255 and alpha[60, 60] == 255, "unpainted stays opaque"
    assert alpha[32, 47] == 255, "erased again"
    assert np.array_equal(rgba[..., :3], photo), "the picture itself is kept"

    watch_events(page)
    page.click("[data-testid=queue-button]")
    wait_event(page, "execution_success")
    history = server.get("/history").json()
    [entry] = history.values()
    prompt = entry["prompt"][2]
    assert prompt[str(load_id)]["inputs"]["image"] == value
    [image] = entry["outputs"][str(ids[7])]["images"]
    png = server.get("/view", params=image)
    assert Image.open(io.BytesIO(png.body)).size == (64, 64)
    assert page.loom_errors == []
