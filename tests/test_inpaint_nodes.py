"""Mask and inpainting nodes: ComfyUI's mask nodes against independent references (scipy's
grey-level morphology, hand-computed ramps), compositing, crop -> stitch, noise masks through
both sampling loops (pixels far from the mask survive within the VAE's round-trip error), and
InpaintModelConditioning against diffusers' StableDiffusionInpaintPipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from sd_fixtures import sd1_setup, sd_cpu_only, tiny_pipeline  # noqa: F401  (autouse: CPU/fp32)

from loom.runtime.sd.types import DiffusionModel, Vae
from nodes.inpaint import (
    ImageCompositeMasked,
    InpaintCrop,
    InpaintModelConditioning,
    InpaintStitch,
    SetLatentNoiseMask,
)
from nodes.masks import (
    CropMask,
    FeatherMask,
    GrowMask,
    ImageToMask,
    MaskComposite,
    MaskToImage,
    ThresholdMask,
)


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# -- mask nodes -----------------------------------------------------------------------------------


def test_image_mask_conversions():
    img = _rand(2, 5, 7, 4)
    (m,) = ImageToMask().run(img, "green")
    assert torch.equal(m, img[..., 1])
    (back,) = MaskToImage().run(m)
    assert back.shape == (2, 5, 7, 3) and torch.equal(back[..., 2], m)
    (alpha,) = ImageToMask().run(img, "alpha")
    assert torch.equal(alpha, img[..., 3])
    with pytest.raises(ValueError, match="no alpha channel"):
        ImageToMask().run(img[..., :3], "alpha")


def test_threshold_and_crop():
    m = _rand(1, 10, 12)
    (t,) = ThresholdMask().run(m, 0.3)
    assert torch.equal(t, (m > 0.3).float())
    (c,) = CropMask().run(m, x=4, y=2, width=5, height=100)
    assert torch.equal(c, m[:, 2:, 4:9])


@pytest.mark.parametrize("tapered", [True, False])
@pytest.mark.parametrize("expand", [3, -2])
def test_grow_mask_matches_scipy_grey_morphology(tapered, expand):
    m = (_rand(2, 24, 30, seed=1) > 0.7).float() * _rand(2, 24, 30, seed=2)  # soft, irregular
    footprint = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]] if tapered else np.ones((3, 3)), bool)
    ref = m.numpy()
    op = ndimage.grey_dilation if expand > 0 else ndimage.grey_erosion
    for _ in range(abs(expand)):
        ref = np.stack([op(r, footprint=footprint, mode="nearest") for r in ref])
    (out,) = GrowMask().run(m, expand, tapered)
    assert np.allclose(out.numpy(), ref)


def test_feather_mask_ramps():
    (out,) = FeatherMask().run(torch.ones(1, 6, 8), left=2, top=3, right=4, bottom=0)
    col = torch.tensor([1 / 2, 1, 1, 1, 1 / 4 * 4 / 4 * 0 + 1, 3 / 4, 2 / 4, 1 / 4])
    col[4] = 1.0  # right ramp covers the last 4 columns: 4/4, 3/4, 2/4, 1/4
    row = torch.tensor([1 / 3, 2 / 3, 1, 1, 1, 1])
    assert torch.allclose(out[0], row[:, None] * col[None, :])


def test_mask_composite_operations():
    dst, src = _rand(1, 8, 8, seed=3), _rand(1, 4, 6, seed=4)
    for op, f in [("multiply", lambda a, b: a * b), ("add", lambda a, b: a + b),
                  ("subtract", lambda a, b: a - b),
                  ("and", lambda a, b: (a.round().bool() & b.round().bool()).float()),
                  ("or", lambda a, b: (a.round().bool() | b.round().bool()).float()),
                  ("xor", lambda a, b: (a.round().bool() ^ b.round().bool()).float())]:
        (out,) = MaskComposite().run(dst, src, x=5, y=2, operation=op)
        ref = dst.clone()
        ref[:, 2:6, 5:8] = f(dst[:, 2:6, 5:8], src[:, :, :3]).clamp(0, 1)
        assert torch.allclose(out, ref), op
    assert torch.equal(MaskComposite().run(dst, src, x=50, y=0, operation="add")[0], dst)


def test_image_composite_masked():
    dst, src = _rand(2, 16, 20, 3, seed=5), _rand(1, 8, 8, 3, seed=6)
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1.0
    mask[0, 0] = 0.25
    (out,) = ImageCompositeMasked().run(dst, src, x=16, y=4, resize_source=False, mask=mask)
    ref = dst.clone()
    m = mask[:, :4, None]  # only 4 columns fit
    ref[:, 4:12, 16:20] = dst[:, 4:12, 16:20] * (1 - m) + src[:, :, :4] * m
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.equal(out[:, :4], dst[:, :4])  # untouched outside the paste
    (whole,) = ImageCompositeMasked().run(dst, src, x=0, y=0, resize_source=True)
    assert whole.shape == dst.shape and not torch.equal(whole, dst)


# -- crop and stitch ------------------------------------------------------------------------------


def test_inpaint_crop_and_stitch_touch_only_the_region():
    img = _rand(1, 300, 400, 3, seed=7)
    mask = torch.zeros(1, 300, 400)
    mask[0, 100:140, 250:270] = 1.0
    stitch, crop, crop_mask = InpaintCrop().run(img, mask, context_expand_pixels=32,
                                                context_expand_factor=1.5, blend_pixels=8,
                                                target_size=512)
    x0, y0, x1, y1 = stitch.box
    assert x0 <= 250 - 32 and x1 >= 270 + 32 and y0 <= 100 - 32 and y1 >= 140 + 32
    assert crop.shape[1] % 8 == 0 and crop.shape[2] % 8 == 0 and max(crop.shape[1:3]) == 512
    assert crop_mask.shape == crop.shape[:3] and crop_mask.max() == 1.0
    # "inpaint": paint the crop red; the masked pixels become red, all else outside the crop stays
    red = torch.zeros_like(crop)
    red[..., 0] = 1.0
    (out,) = InpaintStitch().run(stitch, red)
    assert torch.allclose(out[0, 100:140, 250:270], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    outside = torch.ones(300, 400, dtype=torch.bool)
    outside[y0:y1, x0:x1] = False
    assert torch.equal(out[0][outside], img[0][outside])
    far = torch.ones(300, 400, dtype=torch.bool)
    far[100 - 8:140 + 8, 250 - 8:270 + 8] = False  # beyond mask + blend_pixels
    assert torch.equal(out[0][far], img[0][far])
    # second run, another target size: same region, other crop size
    stitch2, crop2, _ = InpaintCrop().run(img, mask, 32, 1.5, 8, 256)
    assert stitch2.box == stitch.box and max(crop2.shape[1:3]) == 256


def test_inpaint_crop_with_an_empty_mask_takes_the_whole_image():
    img = _rand(1, 40, 48, 3, seed=8)
    stitch, crop, _ = InpaintCrop().run(img, torch.zeros(1, 40, 48), 8, 1.0, 4, 96)
    assert stitch.box == (0, 0, 48, 40) and crop.shape == (1, 80, 96, 3)
    (out,) = InpaintStitch().run(stitch, torch.zeros_like(crop))
    assert torch.equal(out, img)  # nothing masked: nothing changes


def test_stitch_refuses_other_inputs():
    with pytest.raises(TypeError, match="Inpaint Crop"):
        InpaintStitch().run({"box": 1}, torch.zeros(1, 8, 8, 3))


# -- noise masks through sampling -----------------------------------------------------------------


@pytest.fixture(scope="module")
def sd1():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    m = sd1_setup()
    vae = Vae(vae=m.pipe.vae, family="sd1", scaling_factor=m.pipe.vae.config.scaling_factor,
              latent_channels=4, source="tiny")
    yield m.pipe, m.model, vae, m.pos, m.neg
    torch.set_num_threads(before)


def _photo(h=128, w=128, step=4):
    from skimage import data

    arr = data.astronaut()[::step, ::step][:h, :w]
    return torch.from_numpy(arr.astype(np.float32) / 255.0)[None]


def _sample(path, model, pos, neg, latent, seed=3):
    from nodes.custom_sampling import (
        BasicScheduler,
        CFGGuider,
        KSamplerSelect,
        RandomNoise,
        SamplerCustomAdvanced,
    )
    from nodes.sd_sampling import KSampler

    if path == "ksampler":
        return KSampler().run(model=model, seed=seed, steps=4, cfg=6.0, sampler_name="euler",
                              scheduler="normal", positive=pos, negative=neg,
                              latent_image=latent)[0]
    (noise,) = RandomNoise().run(noise_seed=seed)
    (guider,) = CFGGuider().run(model=model, positive=pos, negative=neg, cfg=6.0)
    (sampler,) = KSamplerSelect().run(sampler_name="dpmpp_2m")
    (sigmas,) = BasicScheduler().run(model=model, scheduler="karras", steps=4, denoise=1.0)
    return SamplerCustomAdvanced().run(noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                                       latent_image=latent)[0]


@pytest.fixture(scope="module")
def local_vae():
    """The tiny SD 1.x VAE's architecture made spatially local: no attention in the middle
    block and GroupNorm (whose statistics span the whole image) replaced by identity. A change
    in the latent then reaches only the pixels within the decoder's receptive field (about
    110 px here, measured), so "far from the mask" has a precise meaning."""
    from diffusers import AutoencoderKL
    from sd_fixtures import tiny_configs

    torch.manual_seed(11)
    module = AutoencoderKL(**{**tiny_configs("sd1")["vae"], "mid_block_add_attention": False})
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.GroupNorm):
                setattr(parent, name, torch.nn.Identity())
    return Vae(vae=module.eval(), family="sd1", scaling_factor=0.18215, latent_channels=4,
               source="local")


@pytest.mark.slow
@pytest.mark.parametrize(("path", "encode"), [("ksampler", "SetLatentNoiseMask"),
                                              ("custom", "VAEEncodeForInpaint")])
def test_pixels_far_from_the_mask_survive_within_the_vae_round_trip(sd1, local_vae, path, encode):
    """Latents outside the noise mask are re-blended with the original at every step and at the
    end, so after decoding, pixels far from the mask are exactly the VAE round trip's: they
    differ from the input by no more than the round trip does."""
    from nodes.sd_vae import VAEDecode, VAEEncode, VAEEncodeForInpaint

    _, model, _, pos, neg = sd1
    vae = local_vae
    image = _photo(448, 448, step=1)
    mask = torch.zeros(1, 448, 448)
    mask[0, 32:96, 32:96] = 1.0
    (plain,) = VAEEncode().run(pixels=image, vae=vae)
    (round_trip,) = VAEDecode().run(samples=plain, vae=vae)
    if encode == "SetLatentNoiseMask":
        (latent,) = SetLatentNoiseMask().run(plain, mask)
    else:  # the greyed-out pixels also change the encoding within the encoder's reach
        (latent,) = VAEEncodeForInpaint().run(pixels=image, vae=vae, mask=mask, grow_mask_by=6)
    out = _sample(path, model, pos, neg, latent)
    (decoded,) = VAEDecode().run(samples=out, vae=vae)
    far = torch.zeros(448, 448, dtype=torch.bool)
    far[320:, :] = far[:, 320:] = True  # > 224 px from the mask: beyond encoder + decoder reach
    vae_error = (round_trip - image).abs()[0][far].max().item()
    err = (decoded - image).abs()[0][far].max().item()
    off = (decoded - round_trip).abs()[0][far].max().item()
    inside = (decoded - round_trip).abs()[0, 32:96, 32:96].mean().item()
    print(f"\n{encode} {path}: far from the mask max|out - input| {err:.4f}, VAE round trip "
          f"{vae_error:.4f}, max|out - round trip| {off:.2g}; inside mean|Δ| {inside:.4f}")
    assert off <= 1e-5
    assert err <= vae_error + 1e-5
    assert inside > 10 * max(off, 1e-6)  # and the masked part did change


def test_set_latent_noise_mask_second_run(sd1):
    _, model, vae, pos, neg = sd1
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))}
    m1, m2 = torch.zeros(1, 64, 64), torch.zeros(1, 64, 64)
    m1[:, :32] = 1.0
    m2[:, 32:] = 1.0
    outs = [_sample("ksampler", model, pos, neg, SetLatentNoiseMask().run(latent, m)[0])["samples"]
            for m in (m1, m2)]
    assert torch.allclose(outs[0][..., 4:, :], latent["samples"][..., 4:, :], atol=1e-6)
    assert torch.allclose(outs[1][..., :4, :], latent["samples"][..., :4, :], atol=1e-6)
    assert not torch.allclose(outs[0][..., :4, :], latent["samples"][..., :4, :], atol=1e-2)
    assert "noise_mask" not in latent  # the input LATENT is not changed


# -- InpaintModelConditioning ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def inpaint_model(sd1):
    from diffusers import UNet2DConditionModel

    pipe = sd1[0]
    torch.manual_seed(3)
    unet = UNet2DConditionModel(**{**dict(pipe.unet.config), "in_channels": 9}).eval()
    return DiffusionModel(unet=unet, family="sd1", prediction_type="epsilon",
                          scheduler_config=dict(pipe.scheduler.config),
                          latent_scaling_factor=pipe.vae.config.scaling_factor)


@torch.no_grad()
def test_inpaint_model_conditioning_matches_diffusers_inpaint_pipeline(sd1, inpaint_model):
    from diffusers import EulerDiscreteScheduler, StableDiffusionInpaintPipeline

    from nodes.sd_sampling import KSampler

    pipe, _, vae, pos, neg = sd1
    image = _photo(64, 64)
    mask = torch.zeros(1, 64, 64)
    mask[0, 16:48, 8:40] = 1.0
    p, n, latent = InpaintModelConditioning().run(pos, neg, vae, image, mask, noise_mask=False)
    assert "noise_mask" not in latent and "concat_latent_image" not in pos[0][1]  # copies
    concat = p[0][1]["concat_latent_image"]
    grey = image.clone()
    grey[0, 16:48, 8:40] = 0.5
    ref_concat = pipe.vae.encode(grey.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mode()
    assert torch.allclose(concat, ref_concat, atol=1e-6)
    # diffusers' pipeline at full strength starts from pure noise; Loom (like ComfyUI) adds the
    # input latent to it, so the reference run gets an empty latent: the check is the model's
    # extra channels coming from the conditioning.
    empty = {"samples": torch.zeros_like(latent["samples"])}
    out = KSampler().run(model=inpaint_model, seed=5, steps=3, cfg=7.0, sampler_name="euler",
                         scheduler="normal", positive=p, negative=n, latent_image=empty)[0]
    scale = pipe.vae.config.scaling_factor
    ref_pipe = StableDiffusionInpaintPipeline(
        **{**{k: v for k, v in pipe.components.items() if k != "scheduler"},
           "unet": inpaint_model.unet,
           "scheduler": EulerDiscreteScheduler.from_config(pipe.scheduler.config)})
    ref_pipe.set_progress_bar_config(disable=True)
    ref = ref_pipe(prompt_embeds=pos[0][0], negative_prompt_embeds=neg[0][0],
                   image=image.permute(0, 3, 1, 2), mask_image=mask[:, None],
                   masked_image_latents=ref_concat * scale, height=64, width=64,
                   num_inference_steps=3, guidance_scale=7.0,
                   generator=torch.Generator("cpu").manual_seed(5), output_type="latent").images
    diff = (out["samples"] - ref / scale).abs().max().item()
    print(f"\nInpaintModelConditioning vs StableDiffusionInpaintPipeline: max|Δlatent| = {diff:.3g}")
    assert diff <= 1e-4 * max(1.0, ref.abs().max().item())
    # with noise_mask, the latent outside the mask is the original image's
    _, _, masked = InpaintModelConditioning().run(pos, neg, vae, image, mask, noise_mask=True)
    out2 = KSampler().run(model=inpaint_model, seed=5, steps=3, cfg=7.0, sampler_name="euler",
                          scheduler="normal", positive=p, negative=n, latent_image=masked)[0]
    assert torch.allclose(out2["samples"][..., :, 6:], masked["samples"][..., :, 6:], atol=1e-6)


@pytest.mark.parametrize("path", ["ksampler", "custom"])
def test_unmasked_latents_are_the_noised_original_after_every_step(sd1, path, monkeypatch):
    """Not only at the end: after each solver step, the latents outside the mask are the input
    latent noised to that step's level (and inside they are the sampler's own)."""
    from loom.runtime.sampling import hooks as hooks_module

    _, model, _, pos, neg = sd1
    original = hooks_module.NoiseMaskHook.after_step
    seen = []

    def recording(self, step, index, latents, state):
        out = original(self, step, index, latents, state)
        seen.append((latents.clone(), out.clone(), state.noised(state.latent_image, index)))
        return out

    monkeypatch.setattr(hooks_module.NoiseMaskHook, "after_step", recording)
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))}
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1.0  # left half repainted
    _sample(path, model, pos, neg, SetLatentNoiseMask().run(latent, mask)[0])
    assert len(seen) >= 3
    for before, after, expected in seen:
        assert torch.allclose(after[..., 4:], expected[..., 4:], atol=1e-6)  # right: original
        assert torch.equal(after[..., :4], before[..., :4])  # left: untouched by the mask
        assert not torch.allclose(before[..., 4:], expected[..., 4:], atol=1e-3)  # it did reset
