"""Node declarations -> /object_info, coercion of constants, declaration checks, paths."""

import os

import pytest

from loom.nodeapi import (
    MAX_RESOLUTION,
    Boolean,
    Combo,
    Float,
    Hidden,
    InputError,
    Int,
    Link,
    ModelFile,
    Node,
    NodeRegistry,
    Output,
    RunContext,
    String,
    fraction,
    pixels,
)
from loom.nodeapi.registry import NodeDeclarationError
from loom.paths import Folders, UnsafePathError, safe_join


class Sampler(Node):
    category = "sampling"
    description = "Denoises a latent."
    inputs = {
        "model": Link("MODEL", tooltip="the diffusion model"),
        "seed": Int(0, min=0, max=2**64 - 1, control_after_generate=True),
        "cfg": Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01),
        "sampler_name": Combo(["euler", "ddim"]),
        "text": String("", multiline=True, dynamic_prompts=True),
        "flag": Boolean(True, label_on="on", label_off="off"),
        "ckpt_name": ModelFile("checkpoints"),
        "mask": Link("MASK", optional=True),
        "prompt": Hidden("PROMPT"),
    }
    outputs = (Output("LATENT", tooltip="the denoised latent"),)

    def run(self, **kw):
        return (None,)


def test_object_info_has_comfyui_shape(tmp_path):
    folders = Folders.under(tmp_path)
    folders.create()
    (folders.models_dir / "checkpoints" / "sub").mkdir()
    (folders.models_dir / "checkpoints" / "sub" / "b.safetensors").write_bytes(b"x")
    (folders.models_dir / "checkpoints" / "a.ckpt").write_bytes(b"x")
    (folders.models_dir / "checkpoints" / "notes.txt").write_bytes(b"x")
    reg = NodeRegistry()
    reg.register("Sampler", Sampler)
    info = reg.describe("Sampler", RunContext(paths=folders))
    req = info["input"]["required"]
    assert req["model"] == ["MODEL", {"tooltip": "the diffusion model"}]
    assert req["seed"][0] == "INT" and req["seed"][1]["control_after_generate"] is True
    assert req["seed"][1]["max"] == 2**64 - 1
    assert req["cfg"] == ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}]
    assert req["sampler_name"] == [["euler", "ddim"], {}]
    assert req["text"] == ["STRING", {"default": "", "multiline": True, "dynamicPrompts": True}]
    assert req["flag"][1] == {"default": True, "label_on": "on", "label_off": "off"}
    assert req["ckpt_name"][0] == ["a.ckpt", "sub/b.safetensors"]
    assert info["input"]["optional"] == {"mask": ["MASK"]}
    assert info["input"]["hidden"] == {"prompt": "PROMPT"}
    assert info["input_order"] == {"required": ["model", "seed", "cfg", "sampler_name", "text", "flag",
                                                "ckpt_name"], "optional": ["mask"]}
    assert info["output"] == ["LATENT"] and info["output_name"] == ["LATENT"]
    assert info["output_tooltips"] == ["the denoised latent"]
    assert info["category"] == "sampling" and info["output_node"] is False
    assert info["description"] == "Denoises a latent."


class Blur(Node, category="image/filters", display_name="Blur Image"):
    """Blurs the image:   a box blur of the given
    radius.

    Radius 0 keeps it."""
    inputs = {"image": Link("IMAGE")}
    outputs = (Output("IMAGE"),)

    def run(self, image):
        return (image,)


class SharpBlur(Blur, display_name="Sharp Blur"):
    pass


def test_class_keywords_and_docstring_declare_the_menu_entry():
    reg = NodeRegistry()
    reg.register("Blur", Blur)
    reg.register("SharpBlur", SharpBlur)
    info = reg.describe("Blur")
    assert (info["category"], info["display_name"]) == ("image/filters", "Blur Image")
    # lines of a paragraph joined, whitespace collapsed; a blank line starts a new paragraph
    assert info["description"] == "Blurs the image: a box blur of the given radius.\nRadius 0 keeps it."
    sub = reg.describe("SharpBlur")
    # the category is inherited, the display name overridden; a docstring is not inherited
    assert (sub["category"], sub["display_name"], sub["description"]) == ("image/filters", "Sharp Blur", "")
    assert Node.category == "utils" and Node.display_name is None  # the base is untouched


def test_default_fingerprint_follows_the_model_files_on_disk(tmp_path):
    folders = Folders.under(tmp_path)
    folders.create()
    ctx = RunContext(paths=folders)
    ckpt = folders.models_dir / "checkpoints" / "a.safetensors"
    ckpt.write_bytes(b"one")
    first = Sampler.fingerprint(ctx, ckpt_name="a.safetensors", cfg=8.0)
    assert first is not None and Sampler.fingerprint(ctx, ckpt_name="a.safetensors", cfg=8.0) == first
    ckpt.write_bytes(b"other bytes")  # replaced on disk: the loader must run again
    assert Sampler.fingerprint(ctx, ckpt_name="a.safetensors", cfg=8.0) != first
    assert Sampler.fingerprint(ctx, ckpt_name="gone.safetensors") is None  # validation says why
    assert Sampler.fingerprint(ctx, cfg=8.0) is None  # linked or left out: nothing to read

    class FolderLoader(Node):
        inputs = {"model_path": ModelFile("diffusers")}
        outputs = (Output("MODEL"),)

        def run(self, model_path):
            return (model_path,)

    model = folders.models_dir / "diffusers" / "m"
    (model / "unet").mkdir(parents=True)
    (model / "model_index.json").write_text("{}")
    (model / "unet" / "w.safetensors").write_bytes(b"1")
    before = FolderLoader.fingerprint(ctx, model_path="m")
    (model / "unet" / "w.safetensors").write_bytes(b"22")  # a file deep in the folder changed
    assert FolderLoader.fingerprint(ctx, model_path="m") != before
    assert Blur.fingerprint(ctx) is None  # no model files: the signature is unchanged


def test_model_file_missing_names_file_and_folder(tmp_path):
    folders = Folders.under(tmp_path)
    folders.create()
    inp = Sampler.inputs["ckpt_name"]
    with pytest.raises(InputError) as info:
        inp.coerce("sd15.safetensors", RunContext(paths=folders))
    assert info.value.type == "value_not_in_list"
    assert "sd15.safetensors" in info.value.message
    assert str(folders.models_dir / "checkpoints") in info.value.message


@pytest.mark.parametrize("inp,value,expected", [
    (Int(0), "12", 12), (Int(0), 3.0, 3), (Float(0.0), 2, 2.0), (Float(0.0), "0.5", 0.5),
    (String(""), 5, "5"), (Boolean(False), "true", True), (Boolean(False), 0, False),
])
def test_coercion_accepts(inp, value, expected):
    assert inp.coerce(value) == expected


@pytest.mark.parametrize("inp,value", [
    (Int(0), True), (Int(0), 1.5), (Int(0), None), (Int(0), [1]), (Float(0.0), float("nan")),
    (Float(0.0), "inf"), (String(""), {"a": 1}), (Boolean(False), "yes"), (Combo(["a"]), 1),
])
def test_coercion_rejects(inp, value):
    with pytest.raises(InputError):
        inp.coerce(value)


def test_pixel_and_fraction_shorthands_and_checked_choices():
    side = pixels(512, min=1, step=8)
    assert side == Int(512, min=1, max=MAX_RESOLUTION, step=8)
    assert fraction(0.5) == Float(0.5, min=0.0, max=1.0, step=0.01)
    side.name = "width"
    with pytest.raises(InputError, match="width"):
        side.coerce(MAX_RESOLUTION + 1)
    with pytest.raises(InputError):
        fraction(0.5).coerce(1.5)

    class Pick(Node):
        inputs = {"mode": Combo(["a", "b"])}
        outputs = (Output("STRING"),)

        def run(self, mode):
            return (self.choice("mode", mode),)

    assert Pick().run("b") == ("b",)
    with pytest.raises(ValueError, match=r"mode must be one of \['a', 'b'\], not 'c'"):
        Pick().run("c")


def test_declaration_errors_name_the_node():
    class NoRun(Node):
        inputs = {"a": Int(0)}

    class BadInput(Node):
        inputs = {"a": 5}

        def run(self, a):
            return ()

    reg = NodeRegistry()
    with pytest.raises(NodeDeclarationError, match="NoRun"):
        reg.register("NoRun", NoRun)
    with pytest.raises(NodeDeclarationError, match="BadInput.a"):
        reg.register("BadInput", BadInput)


def test_a_run_default_other_than_the_declared_one_is_a_load_error():
    class Drifted(Node):
        inputs = {"steps": Int(20), "cfg": Float(7.0)}
        outputs = (Output("INT"),)

        def run(self, steps=30, cfg=7.0):
            return (steps,)

    class Repeats(Node):  # the same default, or none: fine
        inputs = {"steps": Int(20), "cfg": Float(7.0)}
        outputs = (Output("INT"),)

        def run(self, steps, cfg=7):
            return (steps,)

    reg = NodeRegistry()
    with pytest.raises(NodeDeclarationError, match=r"Drifted\.steps: run\(\) defaults to 30 .* declares 20"):
        reg.register("Drifted", Drifted)
    reg.register("Repeats", Repeats)
    assert "Repeats" in reg.classes and "Drifted" not in reg.classes


def test_node_runs_without_a_server():
    class Add(Node):
        inputs = {"a": Int(0), "b": Int(0)}
        outputs = (Output("INT"),)

        def run(self, a, b):
            self.ctx.progress(1, 1)
            return (a + b,)

    assert Add().run(a=2, b=3) == (5,)


@pytest.mark.parametrize("bad", [
    "../x", "a/../../x", "/etc/passwd", "a\\..\\x", "C:\\x", "C:x", "a\x00b", "..",
])
def test_safe_join_refuses_escapes(tmp_path, bad):
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, bad)


def test_safe_join_refuses_symlink_out(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("s")
    os.symlink(outside, root / "link.txt")
    with pytest.raises(UnsafePathError):
        safe_join(root, "link.txt")
    assert safe_join(root, "sub/ok.png") == (root / "sub" / "ok.png").resolve()
    assert safe_join(root, "") == root.resolve()


def test_model_listing_sees_new_files(tmp_path):
    folders = Folders.under(tmp_path)
    folders.create()
    assert folders.list_models("loras") == []
    (folders.models_dir / "loras" / "x.safetensors").write_bytes(b"")
    assert folders.list_models("loras") == ["x.safetensors"]
    with pytest.raises(FileNotFoundError, match="models/loras/"):
        folders.resolve_model("loras", "y.safetensors")


def test_clear_temp_empties_only_temp(tmp_path):
    folders = Folders.under(tmp_path)
    folders.create()
    (folders.temp_dir / "a.png").write_bytes(b"x")
    (folders.temp_dir / "sub").mkdir()
    (folders.temp_dir / "sub" / "b.png").write_bytes(b"x")
    keep = folders.output_dir / "keep.png"
    keep.write_bytes(b"x")
    os.symlink(folders.output_dir, folders.temp_dir / "link")
    assert folders.clear_temp() == 3
    assert list(folders.temp_dir.iterdir()) == [] and keep.exists()
