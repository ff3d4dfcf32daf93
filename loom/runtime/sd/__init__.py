"""Stable Diffusion (1.x, 2.x, SDXL) on diffusers: loading, text encoding, VAE, sampling.

Model side (this package's modules; sampling lives in :mod:`loom.runtime.sampling`):

- :mod:`.types`    the MODEL / CLIP / VAE wrappers and CONDITIONING / LATENT / IMAGE conventions
- :mod:`.reader`   safe reading of .safetensors / weights-only .ckpt files, with progress logs
- :mod:`.detect`   what a file is, the SD family and v-prediction, configs read off tensor shapes
- :mod:`.loader`   single-file checkpoints, diffusers folders and VAE files -> wrappers
- :mod:`.keymap`   diffusers -> original key names (LoRA naming, test fixtures)
- :mod:`.shipped`  the shipped base configs and CLIP tokenizer files (nothing is fetched)
- :mod:`.prompt`   ``(word:1.2)`` / ``[word]`` / ``embedding:name`` prompt syntax
- :mod:`.text`     prompts -> CONDITIONING (chunks, weights, layers, textual inversion)
- :mod:`.vae`      decode / encode, tiled, fp32 fallback, latent-space checks
- :mod:`.lora`     kohya and diffusers/PEFT LoRA files -> weight patches
"""
