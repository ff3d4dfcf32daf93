"""Stable Diffusion (1.x, 2.x, SDXL) on diffusers: loading, text encoding, VAE, sampling."""
