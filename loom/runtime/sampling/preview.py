"""Cheap step previews: the model's current x0 estimate projected from latent space to RGB.

A 4x3 linear map per VAE family (least-squares fits of decoded colour on latent channels,
published by the community for SD 1.x/2.x and SDXL VAEs) gives a recognisable thumbnail at
latent resolution for the cost of one small matrix product per step, with no VAE decode.
"""

from __future__ import annotations

import torch

# rows: latent channels 0..3; columns: R, G, B. Inputs are *scaled* latents (what the UNet sees).
_SD1 = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264),
        (-0.184, -0.271, -0.473))
_SDXL = ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
         (-0.3165, -0.2492, -0.2188))
LATENT_RGB: dict[str, tuple[tuple, tuple]] = {
    "sd1": (_SD1, (0.0, 0.0, 0.0)),
    "sd2": (_SD1, (0.0, 0.0, 0.0)),  # SD 2.x kept SD 1.x's VAE
    "sdxl": (_SDXL, (0.1084, -0.0175, -0.0011)),
}
PREVIEW_METHODS = ("latent2rgb", "none")


def latent_to_rgb(latent: torch.Tensor, family: str) -> torch.Tensor | None:
    """``[C, h, w]`` scaled latent -> ``[h, w, 3]`` float32 in 0..1 on the CPU, or None when
    the family has no known projection (or the latent is not 4-channel)."""
    table = LATENT_RGB.get(family)
    if table is None or latent.dim() != 3 or latent.shape[0] != 4:
        return None
    factors = torch.tensor(table[0], dtype=torch.float32, device=latent.device)
    bias = torch.tensor(table[1], dtype=torch.float32, device=latent.device)
    rgb = torch.einsum("chw,cr->hwr", latent.float(), factors) + bias
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0).to("cpu")
