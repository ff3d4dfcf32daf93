"""Loom's demo model (training/demo_model): its scene world, the checkpoint writer, and — when the
shipped weights are there — the acceptance figures through Loom's own graph on the CPU.

The acceptance tests draw 60 held-out prompts twice (cfg 5 and cfg 1) and a few img2img recolours;
on a free 2-core CPU that takes about two minutes, so they run in CI. They skip, saying why, when
``models/checkpoints/loom-demo-shapes.safetensors`` is absent.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from sd_fixtures import sd_cpu_only  # noqa: F401  (fixture)

from training.demo_model import architecture, evaluate, measure, scenes

# -- the scene world ---------------------------------------------------------------------------


def test_scenes_are_seeded_and_captions_come_from_the_parameters():
    a, b = scenes.training_scenes(3, 20), scenes.training_scenes(3, 20)
    assert [s.caption() for s in a] == [s.caption() for s in b]
    assert [s.caption() for s in a] != [s.caption() for s in scenes.training_scenes(4, 20)]
    for s in a:
        cap = s.caption()
        for o in s.objects:
            assert f"{o.size} {o.color} {o.shape} {scenes.POSITION_PHRASE[o.position]}" in cap
        assert cap.endswith(f"on a {' and '.join(s.background)} background")
        assert 1 <= len(s.objects) <= 3
    assert (
        scenes.scene_from_words("orange", "star", "top", "large").caption()
        == "a large orange star at the top on a white background"
    )
    assert scenes.Obj("star", "orange", "large", "top", 0, 0).phrase(
        with_size=False, with_position=False
    ) == ("an orange star")  # grammar: "an" before a vowel


def test_renders_carry_object_masks_and_edges():
    scene = scenes.Scene(
        [
            scenes.Obj("square", "red", "large", "center", 64, 64),
            scenes.Obj("circle", "blue", "small", "center", 64, 64),
        ],
        ("white", "black"),
    )
    r = scenes.render(scene)
    assert r.image.shape == (128, 128, 3) and r.masks.shape == (2, 128, 128)
    # the circle is drawn last, so it hides part of the square: masks are the visible parts
    assert not np.logical_and(r.masks[0], r.masks[1]).any()
    assert (r.image[r.masks[1]] == scenes.COLORS["blue"]).all()
    assert (r.image[r.masks[0]] == scenes.COLORS["red"]).all()
    assert (r.image[0, 0] == scenes.BACKGROUNDS["white"]).all()
    assert (r.image[-1, 0] == scenes.BACKGROUNDS["black"]).all()
    # edges: around each object and along the two-tone split, nowhere inside a flat region
    assert r.edges[64, 0] == 255 or r.edges[63, 0] == 255
    assert r.edges[64, 64] == 0 and r.edges[5, 5] == 0
    assert r.edges[r.masks[1]].any()


def test_held_out_prompts_never_appear_in_training():
    held = set(scenes.held_out_triples())
    assert 30 <= len(held) <= 70
    for s in scenes.training_scenes(0, 2000):
        assert not any((o.color, o.shape, o.position) in held for o in s.objects)
    prompts = scenes.test_prompts(60)
    assert len({p for p, _ in prompts}) == 60
    assert all((o.color, o.shape, o.position) in held for _, s in prompts for o in s.objects)


def test_measure_reads_the_generators_ground_truth():
    rng = random.Random(11)
    for _ in range(150):
        scene = scenes.random_scene(rng, n_objects=1)
        r = measure.read(scenes.render(scene).image, scene.background)
        o = scene.objects[0]
        assert (r.color, r.shape, r.position) == (o.color, o.shape, o.position), scene
    blank = scenes.render(scenes.Scene([], ("gray",))).image
    assert measure.read(blank, ("gray",)).shape is None
    # several objects: each colour's own mask, where the object is
    for _ in range(30):
        scene = scenes.random_scene(rng, n_objects=3)
        r = scenes.render(scene)
        for o, truth in zip(scene.objects, r.masks, strict=True):
            if len({x.color for x in scene.objects}) == 3 and truth.sum() > 200:
                got = measure.colour_mask(r.image, o.color)
                assert measure.iou(got, truth) > 0.8, (scene, o)
                assert measure.position_of(truth) == measure.position_of(got)


def test_text_targets_tokenize_like_the_tokenizer_and_say_only_what_was_read():
    from training.demo_model import text_targets as tt

    names = list(tt.ATTRIBUTES)
    for scene in scenes.training_scenes(2, 40):
        for rng in (None, random.Random(5)):
            caption = scene.caption(random.Random(5) if rng else None)
            ids, rows = tt.encode(scene, rng)
            assert ids == architecture.tokenize([caption])[0].tolist(), caption
            assert rows.shape == (77, len(names))
    scene = scenes.Scene(
        [
            scenes.Obj("star", "cyan", "small", "top left", 30, 30),
            scenes.Obj("circle", "red", "large", "bottom", 64, 96),
        ],
        ("white", "black"),
    )
    ids, rows = tt.encode(scene)
    words = [architecture.tokenizer().decode([i]).strip() for i in ids]
    at = {w: k for k, w in reversed(list(enumerate(words)))}  # first occurrence of each token
    col = {n: k for k, n in enumerate(names)}
    assert rows[at["small"], col["size"]] == tt.ATTRIBUTES["size"].index("small")
    assert rows[at["small"], col["color"]] == tt.IGNORE  # "cyan" not read yet
    star = at["star"]
    assert rows[star, col["color"]] == tt.ATTRIBUTES["color"].index("cyan")  # "cyan" is two tokens
    assert rows[star, col["position"]] == tt.IGNORE
    left = words.index("left")
    assert rows[left, col["position"]] == tt.ATTRIBUTES["position"].index("top left")
    assert rows[words.index("top"), col["position"]] == tt.IGNORE  # "at the top" may go on
    assert (rows[words.index("and")] == tt.IGNORE).all()
    assert rows[words.index("circle"), col["color"]] == tt.ATTRIBUTES["color"].index("red")
    assert rows[words.index("bottom"), col["position"]] == tt.ATTRIBUTES["position"].index("bottom")
    end = words.index("<|endoftext|>")
    assert rows[end, col["bg_top"]] == 0 and rows[end, col["bg_bottom"]] == 1  # white, black
    assert rows[end, col["shape"]] == tt.IGNORE


def test_standardized_latents_keep_the_pictures():
    from training.demo_model.train import standardize_latents

    torch.manual_seed(0)
    vae = architecture.build_vae().eval()
    with torch.no_grad():  # a lopsided latent space, as training leaves it
        vae.quant_conv.weight[:4] *= torch.tensor([0.2, 0.3, 3.0, 1.0]).view(-1, 1, 1, 1)
        vae.quant_conv.bias[:4] += torch.tensor([1.0, -2.0, 0.5, 0.0])
    x = torch.rand(6, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        before = vae.decode(vae.encode(x).latent_dist.mean).sample
        standardize_latents(vae, x)
        z = vae.encode(x).latent_dist.mean * architecture.LATENT_SCALE
        after = vae.decode(z / architecture.LATENT_SCALE).sample
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


# -- the checkpoint writer ---------------------------------------------------------------------


@pytest.mark.slow
def test_written_checkpoint_loads_as_sd1_with_the_same_modules(tmp_path):
    """The writer's file goes through Loom's detector and loader and gives back modules that
    compute what the trained ones compute (up to the fp16 storage)."""
    from loom.runtime.sd.detect import detect_checkpoint
    from loom.runtime.sd.loader import load_checkpoint
    from loom.runtime.sd.reader import load_state_dict
    from training.demo_model import export

    torch.manual_seed(0)
    unet, vae, text = architecture.build_unet(), architecture.build_vae(), architecture.build_text_encoder()
    for m in (unet, vae, text):  # as they will be loaded: fp16-rounded
        m.load_state_dict(
            {k: v.half().float() if v.is_floating_point() else v for k, v in m.state_dict().items()}
        )
        m.eval()
    path = export.write_checkpoint(tmp_path / "demo.safetensors", unet, vae, text, {"test": 1})
    assert path.stat().st_size < 60 * 2**20
    sd = load_state_dict(path)
    info = detect_checkpoint(sd, name=path.name)
    assert info.family == "sd1" and info.prediction_type == "epsilon"
    want_cfg = architecture.unet_config()
    for key in (
        "block_out_channels",
        "down_block_types",
        "up_block_types",
        "layers_per_block",
        "cross_attention_dim",
        "attention_head_dim",
    ):
        assert np.array(info.unet_config[key]).tolist() == np.array(want_cfg[key]).tolist(), key
    assert info.latent_scaling_factor == architecture.LATENT_SCALE

    model, clip, loaded_vae = load_checkpoint(path)
    ids = architecture.tokenize(["a red circle at the top left on a white background"])
    x, t = torch.randn(1, 4, 16, 16), torch.tensor([500])
    with torch.no_grad():
        cond = text(ids).last_hidden_state
        want = unet(x, t, cond).sample
        got_cond = clip.encoders[0](ids).last_hidden_state
        got = model.unet(x, t, got_cond).sample
        torch.testing.assert_close(got_cond, cond, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        img = torch.rand(1, 3, 128, 128) * 2 - 1
        torch.testing.assert_close(
            loaded_vae.vae.decode(vae.encode(img).latent_dist.mean).sample,
            vae.decode(vae.encode(img).latent_dist.mean).sample,
            atol=1e-4,
            rtol=1e-4,
        )


def test_written_edge_controlnet_loads_through_loom_and_computes_the_same(tmp_path):
    """The demo ControlNet's writer: ControlNetLoader's loader reads the file back (diffusers
    layout, SD 1.x family from the 128-wide context) into a module with the same outputs."""
    from loom.runtime.control.loader import load_control
    from training.demo_model import controlnet as cn

    torch.manual_seed(0)
    unet = architecture.build_unet().eval()
    net = cn.build_controlnet(unet).eval()
    with torch.no_grad():  # zero convs would hide a wrong mapping: give them weights
        for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            conv.weight.normal_(0, 0.05)
        net.load_state_dict({k: v.half().float() for k, v in net.state_dict().items()})
    path = cn.write_controlnet(tmp_path / "edges.safetensors", net, {"test": 1})
    loaded = load_control(path)
    assert (loaded.kind, loaded.family) == ("controlnet", "sd1")
    scene = scenes.scene_from_words("red", "star", "top left", "large")
    hint = cn.edge_hint([scene], "cpu")
    assert hint.shape == (1, 3, 128, 128) and set(hint.unique().tolist()) == {0.0, 1.0}
    x, t = torch.randn(1, 4, 16, 16), torch.tensor([400])
    cond = torch.randn(1, 77, 128)
    with torch.no_grad():
        want = net(x, t, cond, controlnet_cond=hint, return_dict=False)
        got = loaded.module.float()(x, t, cond, controlnet_cond=hint, return_dict=False)
    for a, b in zip([*want[0], want[1]], [*got[0], got[1]], strict=True):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-3)


# -- acceptance: the shipped weights through Loom's graph --------------------------------------

_skip_without_weights = pytest.mark.skipif(
    not evaluate.SHIPPED.exists(), reason=f"no shipped demo model at {evaluate.SHIPPED}"
)


def needs_weights(test):
    """Runs the shipped model through Loom's graph: slow (about a minute for the figures)."""
    return pytest.mark.slow(_skip_without_weights(test))


@pytest.fixture(scope="module")
def graph():
    from training.demo_model.loom_graph import LoomGraph

    g = LoomGraph(evaluate.SHIPPED)
    yield g
    g.close()


@pytest.fixture(scope="module")
def figures(graph):
    prompts = scenes.test_prompts(60)
    return {cfg: evaluate.held_out_figures(graph, prompts, cfg) for cfg in (5.0, 1.0)}


THRESHOLDS = {"color": 0.9, "shape": 0.7, "position": 0.7}

@needs_weights
def test_held_out_prompts_draw_what_they_say(figures):
    rates = figures[5.0].rates()
    print("cfg 5:", rates, "| cfg 1:", figures[1.0].rates())
    for what, least in THRESHOLDS.items():
        assert rates[what] >= least, (what, rates, [r for r in figures[5.0].rows])


@needs_weights
def test_guidance_helps(figures):
    """cfg 1 (no guidance) follows the words less well than cfg 5: a sign error or a swapped
    positive/negative in the sampler shows here."""
    guided, plain = figures[5.0].rates(), figures[1.0].rates()
    assert sum(guided.values()) > sum(plain.values()), (guided, plain)


@needs_weights
def test_img2img_changes_the_colour_and_keeps_the_layout(graph):
    """Denoise 0.6, the source's caption with another colour word: the new colour, the object
    where it was (the issue's bound: IoU >= 0.6 with the source's object). Measured: colour 4 of
    4; IoU 0.70 (a medium star), 0.90, 0.94, 0.80."""
    rows = evaluate.img2img_figures(graph, evaluate.recolor_cases(4), denoise=0.6)
    print(rows)
    assert all(r["color"] == r["wanted"] for r in rows), rows
    assert all(r["iou"] >= 0.6 for r in rows), rows


@needs_weights
def test_a_second_run_with_another_prompt_changes_the_picture(graph):
    a = graph.txt2img("a red circle in the center on a white background", seed=1)
    again = graph.txt2img("a red circle in the center on a white background", seed=1)
    b = graph.txt2img("a blue circle in the center on a white background", seed=1)
    assert a.shape == (128, 128, 3)
    assert np.array_equal(a, again)
    assert not np.array_equal(a, b)


# -- the templates set up for it --------------------------------------------------------------

CONTROLNET = evaluate.SHIPPED.parents[1] / "controlnet" / "loom-demo-shapes-edges.safetensors"
CONTROL_IOU = 0.6  # mean foreground IoU with the source's objects, with the ControlNet

# template -> (colour, where) of each thing its prompt names
TEMPLATE_PROMPTS = {
    "txt2img": [("red", "top left"), ("yellow", "bottom right")],
    "img2img": [("pink", "top left"), ("green", "bottom right")],
    "hires_fix": [("blue", "center")],
    "controlnet_canny": [("orange", "top left"), ("purple", "bottom right")],
}


@needs_weights
@pytest.mark.skipif(not CONTROLNET.exists(), reason=f"no shipped edge ControlNet at {CONTROLNET}")
def test_the_edge_controlnet_keeps_the_outlines_of_the_source():
    """Canny edges of a generator picture through the shipped edge ControlNet: the picture's
    objects lie where the source's were (foreground IoU), far better than without it."""
    from training.demo_model.loom_graph import LoomGraph

    g = LoomGraph(evaluate.SHIPPED, CONTROLNET)
    try:
        rows = evaluate.controlnet_figures(g, evaluate.control_cases(4))
    finally:
        g.close()
    print(rows)
    guided = sum(r["iou"] for r in rows) / len(rows)
    plain = sum(r["iou_without"] for r in rows) / len(rows)
    assert guided >= CONTROL_IOU and guided >= plain + 0.2, rows


@needs_weights
@pytest.mark.skipif(not CONTROLNET.exists(), reason=f"no shipped edge ControlNet at {CONTROLNET}")
def test_the_demo_templates_run_as_they_are_and_draw_their_prompts(loom_server_factory):
    """txt2img, img2img, hires fix and ControlNet-canny, exactly as the template files are, on the
    shipped demo model (and edge ControlNet) through the server: each picture shows every colour
    its prompt names, where the prompt puts it."""
    import shutil

    from PIL import Image

    server = loom_server_factory(builtin=True)
    folders = server.settings.folders
    for src, kind in ((evaluate.SHIPPED, "checkpoints"), (CONTROLNET, "controlnet")):
        folder = folders.model_folder(kind)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / src.name)
    for name, wanted in TEMPLATE_PROMPTS.items():
        workflow = server.get(f"/templates/{name}.json").json()  # also copies its input image
        r = server.post("/prompt", json={"workflow": workflow})
        assert r.status == 200, (name, r.text)
        entry = server.wait_history(r.json()["prompt_id"], timeout=300)
        assert entry["status"]["status_str"] == "success", (name, entry["status"])
        [image] = [i for out in entry["outputs"].values() for i in out.get("images", [])]
        with Image.open(folders.output_dir / image["subfolder"] / image["filename"]) as png:
            picture = np.asarray(png.convert("RGB").resize((128, 128), Image.BILINEAR))
        for colour, where in wanted:
            mask = measure.colour_mask(picture, colour)
            assert mask.sum() >= 60, (name, colour, int(mask.sum()))
            assert measure.position_of(measure.largest_blob(mask)) == where, (name, colour)

