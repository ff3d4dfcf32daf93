"""Loom's own small diffusion model: a procedural scene world, its training and its export.

- :mod:`.scenes`        seeded scene generator (shapes, colours, positions, captions, masks, edges)
- :mod:`.architecture`  the small VAE / CLIP text encoder / UNet configs (SD 1.x layout)
- :mod:`.export`        diffusers modules -> one original-layout SD 1.x ``.safetensors``
- :mod:`.text_targets`  what each caption token says: the text encoder's own training stage
- :mod:`.train`         the training script (``python -m training.demo_model.train --help``)
- :mod:`.controlnet`    an edge ControlNet for it (``python -m training.demo_model.controlnet``)
- :mod:`.measure`       reading a generated picture back: colour, shape, position, masks
- :mod:`.evaluate`      held-out prompts through Loom's own graph; the README grid figure
"""
