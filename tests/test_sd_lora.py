"""LoRA: LoraLoader against diffusers' load_lora_weights + fuse_lora at the same strength."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from sd_fixtures import (
    make_lora,
    sd_cpu_only,  # noqa: F401  (autouse: CPU/fp32 even on GPU machines)
    tiny_pipeline,
)

from loom.nodeapi import RunContext
from loom.paths import Folders
from loom.runtime.model_manager import ModelManager
from loom.runtime.sd.reader import ModelFileError
from loom.runtime.sd.text import encode_text
from loom.runtime.sd.types import DiffusionModel, TextEncoder
from nodes.sd_loaders import LoraLoader, LoraLoaderModelOnly


def wrappers(pipe, family):
    fam = {"sd2v": "sd2"}.get(family, family)
    model = DiffusionModel(unet=pipe.unet, family=fam, prediction_type="epsilon")
    encs = (pipe.text_encoder,) + ((pipe.text_encoder_2,) if family == "sdxl" else ())
    toks = (pipe.tokenizer,) + ((pipe.tokenizer_2,) if family == "sdxl" else ())
    return model, TextEncoder(tokenizers=toks, encoders=encs, family=fam)


def unet_inputs(pipe, family):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 77, pipe.unet.config.cross_attention_dim, generator=g)
    kw = {}
    if family == "sdxl":
        kw["added_cond_kwargs"] = {"text_embeds": torch.randn(1, 32, generator=g),
                                   "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
    return x, torch.tensor([500]), ctx, kw


@pytest.fixture
def lora_dir(tmp_path):
    f = Folders.under(tmp_path)
    f.create()
    return f


def run_loom(pipe, family, folders, name, s_model, s_clip, manager, text="a photo of a cat"):
    model, clip = wrappers(pipe, family)
    ctx = RunContext(paths=folders, models=manager)
    new_model, new_clip = LoraLoader(ctx).run(model=model, clip=clip, lora_name=name,
                                              strength_model=s_model, strength_clip=s_clip)
    assert model.patches == () and clip.patches == ()  # inputs are never changed
    x, t, c, kw = unet_inputs(pipe, family)
    with torch.no_grad(), manager.use((new_model.unet, new_model.patches)):
        out = pipe.unet(x, t, c, **kw).sample
    cond = encode_text(new_clip, text, manager=manager)[0]
    return out, cond


@pytest.mark.parametrize(("family", "fmt"), [("sd1", "peft"), ("sd1", "kohya"), ("sdxl", "peft"),
                                             ("sdxl", "kohya"), ("sd2v", "kohya")])
@torch.no_grad()
def test_lora_matches_diffusers(family, fmt, lora_dir):
    pipe = tiny_pipeline(family)
    sd = make_lora(pipe, family, fmt)
    save_file(sd, str(lora_dir.model_folder("loras") / "test.safetensors"))
    manager = ModelManager()
    strength = 0.7
    x, t, c, kw = unet_inputs(pipe, family)
    base = pipe.unet(x, t, c, **kw).sample
    ours, cond = run_loom(pipe, family, lora_dir, "test.safetensors", strength, strength, manager)
    manager.free()  # originals back
    assert torch.equal(pipe.unet(x, t, c, **kw).sample, base)

    # Loom's kohya and PEFT readers agree on the text encoders (diffusers 0.42 + transformers 5
    # drops kohya text-encoder attention layers, so the text side is compared through PEFT).
    peft = make_lora(pipe, family, "peft") if fmt == "kohya" else sd
    if fmt == "kohya":
        # kohya's alpha=2 with rank 4 halves the delta; put the same scale into the PEFT tensors
        peft = {k: v * 0.5 if k.endswith("lora_B.weight") else v for k, v in peft.items()}
        save_file(peft, str(lora_dir.model_folder("loras") / "peft.safetensors"))
        _, cond_peft = run_loom(pipe, family, lora_dir, "peft.safetensors", strength, strength, manager)
        manager.free()
        torch.testing.assert_close(cond[0], cond_peft[0], rtol=1e-5, atol=1e-5)

    path = lora_dir.model_folder("loras") / "diffusers.safetensors"
    save_file(sd, str(path))
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora(lora_scale=strength)
    ref = pipe.unet(x, t, c, **kw).sample
    assert (ref - base).abs().max() > 1e-2  # the LoRA does something
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    if fmt == "peft":
        if family == "sdxl":
            ref_cond, _, pooled, _ = pipe.encode_prompt("a photo of a cat", device="cpu",
                                                        do_classifier_free_guidance=False)
            torch.testing.assert_close(cond[1]["pooled_output"], pooled, rtol=1e-4, atol=1e-4)
        else:
            ref_cond = pipe.encode_prompt("a photo of a cat", "cpu", 1, False)[0]
        torch.testing.assert_close(cond[0], ref_cond, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_strength_zero_model_only_and_restore(lora_dir):
    pipe = tiny_pipeline("sd1")
    save_file(make_lora(pipe, "sd1", "kohya"), str(lora_dir.model_folder("loras") / "k.safetensors"))
    manager = ModelManager()
    model, clip = wrappers(pipe, "sd1")
    x, t, c, kw = unet_inputs(pipe, "sd1")
    base = pipe.unet(x, t, c).sample
    base_cond = encode_text(clip, "a cat", manager=manager)[0][0]
    ctx = RunContext(paths=lora_dir, models=manager)

    zero_model, zero_clip = LoraLoader(ctx).run(model=model, clip=clip, lora_name="k.safetensors",
                                                strength_model=0.0, strength_clip=0.0)
    with manager.use((zero_model.unet, zero_model.patches)):
        assert torch.equal(pipe.unet(x, t, c).sample, base)
    assert torch.equal(encode_text(zero_clip, "a cat", manager=manager)[0][0], base_cond)

    (only,) = LoraLoaderModelOnly(ctx).run(model=model, lora_name="k.safetensors", strength_model=1.0)
    assert only.patches and only.unet is model.unet
    with manager.use((only.unet, only.patches)):
        patched = pipe.unet(x, t, c).sample
    assert not torch.allclose(patched, base)
    # using the same module without patches restores the original weights
    with manager.use((model.unet, model.patches)):
        assert torch.equal(pipe.unet(x, t, c).sample, base)
    # negative strength is the opposite delta; stacking two LoRAs adds them
    (neg,) = LoraLoaderModelOnly(ctx).run(model=only, lora_name="k.safetensors", strength_model=-1.0)
    with manager.use((neg.unet, neg.patches)):
        torch.testing.assert_close(pipe.unet(x, t, c).sample, base, rtol=1e-5, atol=1e-5)


def test_wrong_loras_are_explained(lora_dir):
    sd1 = tiny_pipeline("sd1")
    xl = tiny_pipeline("sdxl")
    loras = lora_dir.model_folder("loras")
    save_file(make_lora(xl, "sdxl", "kohya"), str(loras / "xl.safetensors"))
    ctx = RunContext(paths=lora_dir, models=ModelManager())
    model, clip = wrappers(sd1, "sd1")
    with pytest.raises(ModelFileError, match="different base model"):
        LoraLoader(ctx).run(model=model, clip=clip, lora_name="xl.safetensors", strength_model=1.0,
                            strength_clip=1.0)
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(4, 32, 3, 3)},
              str(loras / "ckpt.safetensors"))
    with pytest.raises(ModelFileError, match="not a LoRA: it looks like a Stable Diffusion checkpoint"):
        LoraLoader(ctx).run(model=model, clip=clip, lora_name="ckpt.safetensors", strength_model=1.0,
                            strength_clip=1.0)
    save_file({"lora_unet_a.hada_w1_a": torch.zeros(2, 2), "lora_unet_a.hada_w1_b": torch.zeros(2, 2)},
              str(loras / "loha.safetensors"))
    with pytest.raises(ModelFileError, match="LoHa"):
        LoraLoader(ctx).run(model=model, clip=clip, lora_name="loha.safetensors", strength_model=1.0,
                            strength_clip=1.0)
    with pytest.raises(FileNotFoundError, match="models/loras/"):
        LoraLoader(ctx).run(model=model, clip=clip, lora_name="nope.safetensors", strength_model=1.0,
                            strength_clip=1.0)
