"""ComfyUI's official front end (``comfyui-frontend-package``, ``--front-end comfyui``) in
Chromium against Loom: it opens without a user picker, shows Loom's templates, loads one,
queues it, shows the image on the SaveImage node and the finished job in its job queue; a
second run with another prompt adds a second image and job.

The template is Loom's txt2img served from a copy of ``workflow_templates/`` shrunk to 64x64 px
and 2 steps (the tiny SD 1.x checkpoint runs it in a second or two)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import pytest
from sd_fixtures import sd_cpu_only, sd_files  # noqa: F401  (fixtures)

from loom.config import REPO_ROOT

pytestmark = pytest.mark.slow  # a browser: tens of seconds

CKPT = "loom-demo-shapes.safetensors"  # the name the txt2img template loads
# What the app asks for and may not find: stylesheets the user never wrote (a text/css 404),
# and the legacy user-templates file.
EXPECTED_404 = ("/user.css", "/api/userdata/user.css", "/api/userdata/comfy.templates.json")


@pytest.fixture
def comfyui_server(loom_server_factory, sd_files, tmp_path):  # noqa: F811
    if importlib.util.find_spec("comfyui_frontend_package") is None:
        message = ("comfyui-frontend-package is not installed (requirements-test.txt pins it; "
                   "scripts/test.sh installs it)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    templates = tmp_path / "templates"
    shutil.copytree(REPO_ROOT / "workflow_templates", templates)
    workflow = json.loads((templates / "txt2img.json").read_text())
    for node in workflow["nodes"]:
        if node["type"] == "EmptyLatentImage":
            node["widgets_values"][0:2] = [64, 64]
        elif node["type"] == "KSampler":
            node["widgets_values"][2] = 2
    (templates / "txt2img.json").write_text(json.dumps(workflow))
    server = loom_server_factory(builtin=True, front_end="comfyui", templates_dir=templates)
    checkpoints = server.settings.folders.model_folder("checkpoints")
    (checkpoints / CKPT).write_bytes(sd_files("sd1").read_bytes())
    return server


def test_comfyui_front_end_runs_a_loom_template(comfyui_server, page):
    server = comfyui_server
    with page.expect_response(lambda r: r.url.endswith("/api/users")) as users:
        page.goto(server.url + "/")
    assert users.value.json() == {"storage": "server", "migrated": True}
    page.wait_for_function("() => window.app && window.app.graph && window.app.canvas",
                           timeout=60_000)
    # Single user: the app stays on its graph, no user picker.
    assert "user-select" not in page.url
    assert page.get_by_text("New user").count() == 0

    # A new visitor gets the template browser, listing Loom's templates (from index.json).
    dialog_card = page.get_by_text("Text to image", exact=True).first
    if not dialog_card.is_visible():
        page.get_by_role("button", name="Templates").first.click()
    for title in ("Text to image", "Image to image", "Hires fix", "Inpaint", "LoRA"):
        assert page.get_by_text(title, exact=True).first.is_visible(), title
    with page.expect_response(lambda r: r.url.endswith("/templates/txt2img.json")) as template:
        page.get_by_text("Text to image", exact=True).first.click()
    assert template.value.status == 200
    page.wait_for_function("() => window.app.graph.nodes.length === 7")
    types = page.evaluate("() => window.app.graph.nodes.map(n => n.type).sort()")
    assert types == sorted(n["type"] for n in template.value.json()["nodes"])

    # Queue it: the image shows on the SaveImage node...
    page.get_by_role("button", name="Run").first.click()
    image = page.wait_for_selector("img[src*='/api/view'][src*='filename=Loom_']", timeout=120_000)
    assert "type=output" in image.get_attribute("src")
    # ... and the finished job in the job queue, read from Loom's /jobs.
    page.get_by_role("button", name="Expand job queue").click()
    entry = page.get_by_text("Loom_00001_.png").first
    entry.wait_for(timeout=30_000)
    jobs = server.get("/api/jobs?status=completed").json()["jobs"]
    assert len(jobs) == 1 and jobs[0]["preview_output"]["filename"] == "Loom_00001_.png"
    assert (server.settings.folders.output_dir / "Loom_00001_.png").is_file()

    # A second run with another prompt: a new image, a second job.
    page.evaluate("""() => {
        const node = window.app.graph.nodes.find(n => n.title === 'Positive prompt');
        node.widgets.find(w => w.name === 'text').value = 'a red fox in the snow';
    }""")
    page.get_by_role("button", name="Run").first.click()
    page.wait_for_selector("img[src*='/api/view'][src*='filename=Loom_00002_']", timeout=120_000)
    page.get_by_text("Loom_00002_.png").first.wait_for(timeout=30_000)
    jobs = server.get("/api/jobs?status=completed").json()["jobs"]
    assert [j["preview_output"]["filename"] for j in jobs] == ["Loom_00002_.png", "Loom_00001_.png"]
    prompt = server.get(f"/api/jobs/{jobs[0]['id']}").json()["workflow"]["prompt"]
    assert "a red fox in the snow" in [n["inputs"].get("text") for n in prompt.values()]

    assert not [e for e in page.loom_errors if e.startswith("pageerror")], page.loom_errors
    unexpected = [r for r in page.loom_bad_responses
                  if not r.startswith("404 ") or not r.endswith(EXPECTED_404)]
    assert unexpected == [], unexpected
