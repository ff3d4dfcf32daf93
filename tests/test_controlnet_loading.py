"""Loading ControlNets and T2I-Adapters from models/controlnet/: every layout, detection from
keys and shapes, diff ControlNets, listings, and the errors a user gets for wrong files."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from control_fixtures import (
    adapter_to_original,
    controlnet_to_original,
    save_controlnet,
    tiny_adapter,
    tiny_controlnet,
)
from safetensors.torch import save_file
from sd_fixtures import sd_cpu_only, sd_files, tiny_pipeline  # noqa: F401  (fixtures)

from loom.nodeapi import RunContext
from loom.paths import Folders
from loom.runtime.control import apply_control
from loom.runtime.model_manager import ModelManager
from loom.runtime.sampling import sample
from loom.runtime.sd.reader import ModelFileError
from loom.runtime.sd.types import DiffusionModel
from nodes.controlnet import ControlNetLoader, DiffControlNetLoader, T2IAdapterLoader


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    f = Folders.under(tmp_path_factory.mktemp("cn-load"))
    f.create()
    return f


def ctx(folders):
    return RunContext(paths=folders, models=ModelManager())


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("layout", ["original", "original-bare", "diffusers-file",
                                    "diffusers-folder"])
def test_every_layout_loads_the_same_controlnet(folders, family, layout):
    net = tiny_controlnet(family, seed=4)
    name = f"{family}-{layout}" + ("" if layout.endswith("folder") else ".safetensors")
    path = folders.model_folder("controlnet") / name
    if layout == "original-bare":  # some files carry no control_model. prefix
        sd = {k: v.contiguous() for k, v in net.state_dict().items()}
        save_file(controlnet_to_original(sd, dict(net.config), prefix=""), str(path))
    else:
        save_controlnet(net, path, layout)
    assert name in folders.list_models("controlnet")
    (loaded,) = ControlNetLoader(ctx(folders)).run(name)
    assert loaded.kind == "controlnet" and loaded.family == family
    assert same_weights(loaded.module, net)
    for key in ("block_out_channels", "attention_head_dim", "transformer_layers_per_block",
                "addition_time_embed_dim", "use_linear_projection", "cross_attention_dim"):
        assert loaded.module.config.get(key) == net.config.get(key) or \
            list(loaded.module.config.get(key) or []) == list(net.config.get(key) or []), key


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("layout", ["folder", "file"])
def test_t2i_adapter_loads_from_folder_and_single_file(folders, layout, family):
    adapter = tiny_adapter(seed=6, family=family)
    path = folders.model_folder("controlnet") / f"adapter-{family}-{layout}"
    if layout == "folder":
        adapter.save_pretrained(path, safe_serialization=True)
        name = path.name
    else:
        name = path.name + ".safetensors"
        save_file({k: v.contiguous() for k, v in adapter.state_dict().items()},
                  str(path.parent / name))
    for node in (T2IAdapterLoader(ctx(folders)), ControlNetLoader(ctx(folders))):
        (loaded,) = node.run(name)
        assert loaded.kind == "t2i_adapter" and same_weights(loaded.module, adapter)
        assert loaded.family == family
        assert loaded.module.config.adapter_type == adapter.config.adapter_type


def test_original_layout_t2i_adapter_loads(folders):
    """TencentARC's own files (SD 1.4 adapters: four levels, 1x1 second convs)."""
    from diffusers import T2IAdapter

    torch.manual_seed(9)
    adapter = T2IAdapter(in_channels=3, channels=[32, 64, 64, 64], num_res_blocks=2,
                         downscale_factor=8, adapter_type="full_adapter").eval()
    sd = adapter_to_original(adapter.state_dict(), 2)
    torch.save(sd, folders.model_folder("controlnet") / "t2iadapter_tiny_sd14v1.pth")
    (loaded,) = T2IAdapterLoader(ctx(folders)).run("t2iadapter_tiny_sd14v1.pth")
    assert loaded.kind == "t2i_adapter" and same_weights(loaded.module, adapter)
    assert loaded.module.config.channels == [32, 64, 64, 64]


def test_wrong_files_give_clear_errors(folders, sd_files):  # noqa: F811
    root = folders.model_folder("controlnet")
    (root / "checkpoint.safetensors").write_bytes(sd_files("sd1").read_bytes())
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 4)},
              str(root / "lora.safetensors"))
    (root / "broken.safetensors").write_bytes(b"not a safetensors file")
    save_controlnet(tiny_controlnet("sd1"), root / "plain.safetensors", "original")
    loader = ControlNetLoader(ctx(folders))
    with pytest.raises(ModelFileError, match="not a ControlNet.*Stable Diffusion checkpoint"):
        loader.run("checkpoint.safetensors")
    with pytest.raises(ModelFileError, match="not a ControlNet.*LoRA"):
        loader.run("lora.safetensors")
    with pytest.raises(ModelFileError):
        loader.run("broken.safetensors")
    with pytest.raises(FileNotFoundError, match="controlnet"):
        loader.run("missing.safetensors")
    with pytest.raises(ModelFileError, match="is a ControlNet, not a T2I-Adapter"):
        T2IAdapterLoader(ctx(folders)).run("plain.safetensors")


def test_diff_controlnet_adds_the_base_unet(folders):
    pipe = tiny_pipeline("sd1")
    model = DiffusionModel(unet=pipe.unet, family="sd1", prediction_type="epsilon",
                           scheduler_config=dict(pipe.scheduler.config))
    net = tiny_controlnet("sd1", seed=8)
    base = pipe.unet.state_dict()
    sd = {}
    for key, value in net.state_dict().items():
        own = base.get(key)
        diff = own is not None and own.shape == value.shape
        sd[key] = (value - own if diff else value).contiguous()
    original = controlnet_to_original(sd, dict(net.config))
    original["difference"] = torch.tensor([])  # the marker diff files carry
    save_file(original, str(folders.model_folder("controlnet") / "diff.safetensors"))
    (loaded,) = DiffControlNetLoader(ctx(folders)).run(model, "diff.safetensors")
    a, b = loaded.module.state_dict(), net.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    with pytest.raises(ModelFileError, match="DiffControlNetLoader"):
        ControlNetLoader(ctx(folders)).run("diff.safetensors")


def test_a_controlnet_of_another_family_is_refused_by_name(folders):
    save_controlnet(tiny_controlnet("sdxl"), folders.model_folder("controlnet") / "xl.safetensors",
                    "original")
    (net,) = ControlNetLoader(ctx(folders)).run("xl.safetensors")
    pipe = tiny_pipeline("sd1")
    model = DiffusionModel(unet=pipe.unet, family="sd1", prediction_type="epsilon",
                           scheduler_config=dict(pipe.scheduler.config))
    cond = [[torch.zeros(1, 77, 32), {"pooled_output": None}]]
    m = SimpleNamespace(pos=apply_control(cond, net, torch.zeros(1, 64, 64, 3), 1.0))
    with pytest.raises(ValueError, match="xl.safetensors is a sdxl ControlNet but the model is sd1"):
        sample(model, m.pos, cond, {"samples": torch.zeros(1, 4, 8, 8)}, seed=0, steps=1,
               cfg=2.0, sampler_name="euler", scheduler="normal", models=ModelManager())


def test_one_copy_per_file_and_a_changed_file_loads_again(folders):
    root = folders.model_folder("controlnet")
    save_controlnet(tiny_controlnet("sd1", seed=11), root / "shared.safetensors", "original")
    manager = ModelManager()
    c = RunContext(paths=folders, models=manager)
    (first,) = ControlNetLoader(c).run("shared.safetensors")
    (second,) = ControlNetLoader(RunContext(paths=folders, models=manager)).run("shared.safetensors")
    assert second is first
    with pytest.raises(ModelFileError, match="not a T2I-Adapter"):
        T2IAdapterLoader(c).run("shared.safetensors")
    import os
    import time

    save_controlnet(tiny_controlnet("sd1", seed=12), root / "shared.safetensors", "original")
    later = time.time() + 5
    os.utime(root / "shared.safetensors", (later, later))
    (third,) = ControlNetLoader(c).run("shared.safetensors")
    assert third is not first and same_weights(third.module, tiny_controlnet("sd1", seed=12))


def test_a_shuffle_controlnet_pools_its_residuals(folders):
    save_controlnet(tiny_controlnet("sd1"), folders.model_folder("controlnet") /
                    "control_v11e_sd15_shuffle.safetensors", "original")
    (net,) = ControlNetLoader(ctx(folders)).run("control_v11e_sd15_shuffle.safetensors")
    assert net.module.config.global_pool_conditions
