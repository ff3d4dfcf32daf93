"""SaveImageWebsocket: hand images straight to the script that queued the prompt.

ComfyUI's websocket image example uses it: nothing is written to disk; each image arrives on
the client's websocket as a binary PNG frame (type 1, format 2; see loom/server/previews.py)
after ``executing`` for this node and before the next ``executing``.
"""

from __future__ import annotations

from loom.nodeapi import ALWAYS_RUN, Link, Node


class SaveImageWebsocket(Node, category="api node/image", display_name="Save Image (Websocket)"):
    """Sends each image to the client that queued the prompt, as a PNG over its websocket."""

    output_node = True
    inputs = {"images": Link("IMAGE", tooltip="The images to send.")}
    outputs = ()

    @classmethod
    def fingerprint(cls, ctx, **inputs):
        # The client waits for the frames: a run served from the cache would send none.
        return ALWAYS_RUN

    def run(self, images):
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
            raise ValueError(f"images must be [batch, height, width, 1|3|4], "
                             f"got {list(images.shape)}")
        for image in images:
            self.ctx.check_interrupted()
            self.ctx.send_image(image)
        return ()


NODES = [SaveImageWebsocket]
