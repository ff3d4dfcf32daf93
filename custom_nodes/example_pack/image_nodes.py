"""An image node: numeric inputs with ranges and tooltips, an optional input, progress and
interrupt through ``self.ctx``."""

from __future__ import annotations

import torch

from loom.nodeapi import Float, Link, Node, Output


# The category is where the node appears in the editor's menu; the docstring below is the
# description the editor shows.
class BrightnessContrast(Node, category="example/image", display_name="Brightness / Contrast (example)"):
    """Adjusts brightness and contrast; with a mask, only where the mask is set."""

    # The name clients use in prompts ("class_type"). Without it the class name is used. Prefix
    # names with your pack's so that two packs cannot clash.
    class_type = "ExampleBrightnessContrast"

    # Declaration order is the order the editor shows. Widgets (Int, Float, String, Boolean,
    # Combo) hold constants; Link inputs are sockets fed by another node's output of that type.
    inputs = {
        "image": Link("IMAGE", tooltip="Images to adjust, [batch, height, width, channels] in 0..1"),
        "brightness": Float(0.0, min=-1.0, max=1.0, step=0.01,
                            tooltip="Added to every channel: -1 is black, +1 is white"),
        "contrast": Float(1.0, min=0.0, max=3.0, step=0.01, display="slider",
                          tooltip="Scales the distance from mid-grey: 0 is flat grey, 1 unchanged"),
        # Optional inputs may be left unconnected; run() then does not receive them.
        "mask": Link("MASK", optional=True,
                     tooltip="Where to apply (1) and where to keep the original (0)"),
    }
    outputs = (Output("IMAGE", tooltip="The adjusted images"),)

    # Bump when the result for the same inputs changes, so cached results are not reused.
    version = "1"

    def run(self, image: torch.Tensor, brightness: float, contrast: float,
            mask: torch.Tensor | None = None):
        out = torch.empty_like(image)
        total = image.shape[0]
        for i in range(total):
            adjusted = ((image[i] - 0.5) * contrast + 0.5 + brightness).clamp(0.0, 1.0)
            if mask is not None:
                # A MASK is [batch, height, width]; reuse its last entry for longer batches.
                m = mask[min(i, mask.shape[0] - 1)].to(image.dtype)
                if m.shape != image.shape[1:3]:
                    m = torch.nn.functional.interpolate(m[None, None], size=image.shape[1:3],
                                                        mode="bilinear")[0, 0]
                adjusted = image[i] + (adjusted - image[i]) * m[..., None]
            out[i] = adjusted
            # Reports "i+1 of total" to the editor's progress bar and raises Interrupted when
            # the user pressed Cancel: call it in any loop that can take a while.
            self.ctx.progress(i + 1, total)
        return (out,)
