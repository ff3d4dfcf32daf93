"""Stable Diffusion loader nodes: checkpoints, diffusers folders, VAEs, LoRAs (ComfyUI's names).

Loaders build models on the CPU in the device policy's dtypes and hand them to the model
manager through the MODEL/CLIP/VAE wrappers; they never move weights to the GPU themselves.
The engine's output cache keeps what a loader returned; a node's default fingerprint includes
the (path, size, mtime) of each file its ModelFile inputs name, so a replaced file is loaded
again. Loads go through the model
manager's :class:`~loom.runtime.loaded_models.LoadedModels`: every worker gets the one copy of
a file the process holds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from loom.files import model_path as _resolve
from loom.nodeapi import Boolean, Combo, Float, Link, ModelFile, Node, Output
from loom.runtime.sd import lora as lora_mod
from loom.runtime.sd.common import manager_of
from loom.runtime.sd.loader import load_checkpoint, load_diffusers, load_vae_file
from loom.runtime.sd.reader import load_state_dict


def warm_up() -> None:
    """Import the model libraries at start-up, not in the first worker that loads a model."""
    from loom.runtime.sd.loader import preload

    preload()




def _embeddings_dir(ctx: Any) -> str | None:
    paths = ctx.paths if ctx is not None else None
    try:
        return str(paths.model_folder("embeddings")) if paths is not None else None
    except KeyError:
        return None


def _progress(ctx: Any):
    return (lambda done, total: ctx.progress(done, total)) if ctx is not None else None


class CheckpointLoaderSimple(Node, category="loaders", display_name="Load Checkpoint"):
    """Loads a Stable Diffusion checkpoint (SD 1.x, SD 2.x, SDXL; .safetensors or .ckpt) and gives
    its diffusion model, text encoder(s) and VAE."""
    inputs = {"ckpt_name": ModelFile("checkpoints", tooltip="The checkpoint file to load.")}
    outputs = (Output("MODEL", tooltip="The diffusion model (UNet)."),
               Output("CLIP", tooltip="The text encoder(s) for prompts."),
               Output("VAE", tooltip="The VAE, between images and latents."))

    def run(self, ckpt_name):
        path = _resolve(self.ctx, "checkpoints", ckpt_name)
        manager = manager_of(self.ctx)
        embeddings = _embeddings_dir(self.ctx)
        model, clip, vae = manager.loaded.get(
            "checkpoint", path, lambda: load_checkpoint(path, policy=manager.policy,
                                                        embeddings_dir=embeddings,
                                                        progress=_progress(self.ctx)),
            options=(manager.policy, embeddings))
        return (model, clip, vae)


class DiffusersLoader(Node, category="advanced/loaders", display_name="Diffusers Loader"):
    """Loads a Stable Diffusion model saved as a diffusers folder (models/diffusers/)."""
    inputs = {"model_path": ModelFile("diffusers", tooltip="A folder with model_index.json.")}
    outputs = (Output("MODEL"), Output("CLIP"), Output("VAE"))

    def run(self, model_path):
        folder = _resolve(self.ctx, "diffusers", model_path)
        manager = manager_of(self.ctx)
        embeddings = _embeddings_dir(self.ctx)
        return manager.loaded.get(
            "diffusers", folder / "model_index.json",
            lambda: load_diffusers(folder, policy=manager.policy, embeddings_dir=embeddings),
            options=(manager.policy, embeddings))


class VAELoader(Node, category="loaders", display_name="Load VAE"):
    """Loads a VAE file (models/vae/), e.g. to replace a checkpoint's own VAE."""
    inputs = {"vae_name": ModelFile("vae")}
    outputs = (Output("VAE"),)

    def run(self, vae_name):
        path = _resolve(self.ctx, "vae", vae_name)
        manager = manager_of(self.ctx)
        return (manager.loaded.get("vae", path, lambda: load_vae_file(
            path, policy=manager.policy, progress=_progress(self.ctx)), options=manager.policy),)


def _strength() -> Float:
    return Float(1.0, min=-100.0, max=100.0, step=0.01)


def _apply_lora(ctx, model, clip, lora_name: str, strength_model: float, strength_clip: float):
    path = _resolve(ctx, "loras", lora_name)
    sd = load_state_dict(path, what="LoRA")
    if model is None:
        raise ValueError("LoraLoader needs a MODEL")
    encoders = clip.encoders if clip is not None else ()
    if clip is not None and clip.family != model.family:
        raise ValueError(f"The MODEL is {model.family} but the CLIP is {clip.family}: connect the "
                         f"model and CLIP of the same checkpoint.")
    patches = lora_mod.parse(sd, unet=model.unet, unet_config=dict(model.unet.config), encoders=encoders,
                             family=model.family, strength_model=strength_model,
                             strength_clip=strength_clip, name=path.name)
    new_model = model.with_patches(tuple(patches.unet)) if strength_model != 0 else model
    new_clip = clip
    if clip is not None and strength_clip != 0 and patches.text:
        new_clip = clip.replace(patches=clip.patches + tuple(patches.text))
    return new_model, new_clip


class LoraLoader(Node, category="loaders", display_name="Load LoRA"):
    """Applies a LoRA (models/loras/, kohya or diffusers format) to the diffusion model and the text
    encoder, each with its own strength."""
    inputs = {
        "model": Link("MODEL", tooltip="The diffusion model the LoRA will be applied to."),
        "clip": Link("CLIP", tooltip="The text encoder the LoRA will be applied to."),
        "lora_name": ModelFile("loras", tooltip="The LoRA file."),
        "strength_model": _strength(),
        "strength_clip": _strength(),
    }
    outputs = (Output("MODEL"), Output("CLIP"))

    def run(self, model, clip, lora_name, strength_model=1.0, strength_clip=1.0):
        if strength_model == 0 and strength_clip == 0:
            return (model, clip)
        return _apply_lora(self.ctx, model, clip, lora_name, strength_model, strength_clip)


class LoraLoaderModelOnly(Node, category="loaders", display_name="LoraLoaderModelOnly"):
    """Applies a LoRA to the diffusion model only."""
    inputs = {
        "model": Link("MODEL"),
        "lora_name": ModelFile("loras"),
        "strength_model": Float(1.0, min=-100.0, max=100.0, step=0.01),
    }
    outputs = (Output("MODEL"),)

    def run(self, model, lora_name, strength_model=1.0):
        if strength_model == 0:
            return (model,)
        new_model, _ = _apply_lora(self.ctx, model, None, lora_name, strength_model, 0.0)
        return (new_model,)


class ModelSamplingDiscrete(Node, category="advanced/model", display_name="ModelSamplingDiscrete"):
    """Overrides what the model predicts (eps or v_prediction), for checkpoints whose prediction
    type cannot be detected from the file."""
    inputs = {
        "model": Link("MODEL"),
        "sampling": Combo(["eps", "v_prediction", "lcm", "x0"], default="eps"),
        "zsnr": Boolean(False),
    }
    outputs = (Output("MODEL"),)

    def run(self, model, sampling, zsnr=False):
        pred = {"eps": "epsilon", "v_prediction": "v_prediction"}.get(sampling)
        if pred is None:
            raise ValueError(f"ModelSamplingDiscrete: sampling {sampling!r} is not supported yet "
                             "(eps and v_prediction are)")
        sched = dict(model.scheduler_config, prediction_type=pred)
        if zsnr:
            sched["rescale_betas_zero_snr"] = True
        options = dict(model.options, prediction_source="ModelSamplingDiscrete", zsnr=bool(zsnr))
        return (dataclasses.replace(model, prediction_type=pred, scheduler_config=sched, options=options),)


NODES = [CheckpointLoaderSimple, DiffusersLoader, VAELoader, LoraLoader, LoraLoaderModelOnly,
         ModelSamplingDiscrete]
