"""Who gets step previews, and the binary websocket frames that carry images.

ComfyUI's protocol, which Loom speaks:

- A binary frame starts with a big-endian u32 event type. Type 1 is an image: a u32 format
  (1 = JPEG, 2 = PNG), then the encoded image. Type 4 is an image with metadata: a u32 length,
  that much JSON (``node_id``, ``prompt_id``, ``display_node_id``, ``parent_node_id``,
  ``real_node_id``, ``image_type`` as a MIME type), then the encoded image.
- A client may announce what it understands in a ``{"type": "feature_flags", "data": {...}}``
  message, the first it sends; ComfyUI's front ends send ``supports_preview_metadata: true``.
- A prompt may choose its preview method: ``extra_data.preview_method`` is ``none``, ``auto``,
  ``latent2rgb``, ``taesd``, or ``default`` (the server's), as ComfyUI's front end sends it.

Loom's rule: step previews are opt-in, so scripts that read every binary frame as a result
(comfy-api-simplified, for one) are not handed thumbnails. A prompt's previews go to the
connections of the client that queued it (every connection, for a prompt queued without a
client id) that asked for them, in one of two ways:

- the connection sent ``feature_flags`` with ``supports_preview_metadata: true`` (ComfyUI's front
  ends do): it gets type-4 frames, which name the node; or with ``previews: true`` (Loom's
  editor does; a Loom flag, for clients that read only type 1): it gets type-1 frames;
- the prompt named a method in ``extra_data.preview_method``: the connections of its client id
  get type-1 frames (type 4 if they declared metadata support).

``preview_method: "none"`` turns previews off for one prompt; without a method (or with
``default``) the server's ``--preview-method`` decides, and ``none`` there turns them off for
everyone who did not name a method. Loom draws previews with ``latent2rgb``; ``auto`` and
``taesd`` (for which Loom has no decoder) get it too.

Images that a node sends on purpose (SaveImageWebsocket) are not previews: they go to the
prompt's client as PNG frames (type 1, or 4 for connections that declared metadata support)
whether or not it asked.
"""

from __future__ import annotations

import io
import json
import logging
import struct
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("loom.server")

PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd", "default")
IMAGE_EVENT, PROGRESS_TEXT_EVENT, IMAGE_WITH_METADATA_EVENT = 1, 3, 4
JPEG, PNG = 1, 2
PREVIEW_MAX_SIZE = 512  # pixels, the longer side (ComfyUI's default)
PREVIEW_METADATA_FLAG = "supports_preview_metadata"
PREVIEWS_FLAG = "previews"  # Loom's: "send me step previews" (as type-1 frames)


@dataclass(frozen=True)
class PreviewRequest:
    """How a prompt wants its previews: ``method`` is ``latent2rgb`` or ``none``;
    ``explicit``: the prompt named a method (so its client gets previews without flags)."""

    method: str
    explicit: bool

    @property
    def enabled(self) -> bool:
        return self.method != "none"


def preview_method_error(extra_data: dict) -> str | None:
    """Why ``extra_data.preview_method`` is not acceptable, or None."""
    method = extra_data.get("preview_method")
    if method is None or (isinstance(method, str) and method in PREVIEW_METHODS):
        return None
    return (f"'extra_data.preview_method' must be one of {', '.join(PREVIEW_METHODS)}; "
            f"got {method!r}")


def preview_request(extra_data: dict | None, server_method: str) -> PreviewRequest:
    """The previews a prompt asks for (``server_method``: the ``--preview-method``)."""
    method = (extra_data or {}).get("preview_method")
    if method not in PREVIEW_METHODS or method == "default":
        return PreviewRequest("none" if server_method == "none" else "latent2rgb", False)
    return PreviewRequest("none" if method == "none" else "latent2rgb", True)


def wants_preview_metadata(feature_flags: dict) -> bool:
    return feature_flags.get(PREVIEW_METADATA_FLAG) is True


def asked_for_previews(feature_flags: dict) -> bool:
    """Whether a connection's feature flags ask for step previews (of any frame type)."""
    return wants_preview_metadata(feature_flags) or feature_flags.get(PREVIEWS_FLAG) is True


# -- frames -----------------------------------------------------------------------------------

def _to_pil(image: Any):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    import numpy as np

    array = image.detach().float().cpu().numpy() if hasattr(image, "detach") else image
    array = (np.clip(np.asarray(array, dtype=np.float32), 0, 1) * 255).round().astype("uint8")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array)  # [H, W] -> L, [H, W, 3] -> RGB, [H, W, 4] -> RGBA


@dataclass(frozen=True)
class ImageFrame:
    """An image for the websocket, encoded once and framed per connection: type 4 (with the
    node's metadata) for connections that declared ``supports_preview_metadata``, else type 1.

    ``always``: a node sent it on purpose (SaveImageWebsocket), so every connection the
    prompt's events go to gets it; otherwise it is a step preview, for those who asked
    (``explicit``: the prompt named a preview method; see the module's rule)."""

    data: bytes
    fmt: int  # JPEG or PNG
    node_id: str
    prompt_id: str
    explicit: bool = False
    always: bool = False

    def frame(self, with_metadata: bool) -> bytes:
        if not with_metadata:
            return struct.pack(">II", IMAGE_EVENT, self.fmt) + self.data
        meta = json.dumps({"node_id": self.node_id, "prompt_id": self.prompt_id,
                           "display_node_id": self.node_id, "parent_node_id": None,
                           "real_node_id": self.node_id,
                           "image_type": "image/png" if self.fmt == PNG else "image/jpeg"})
        meta_bytes = meta.encode()
        return struct.pack(">II", IMAGE_WITH_METADATA_EVENT, len(meta_bytes)) + meta_bytes \
            + self.data


def encode_preview(image: Any, node_id: str, prompt_id: str,
                   explicit: bool) -> ImageFrame | None:
    """A step preview (PIL image, or ``[H, W, C]`` array/tensor in 0..1): a JPEG thumbnail."""
    try:
        pil = _to_pil(image).convert("RGB")
        pil.thumbnail((PREVIEW_MAX_SIZE, PREVIEW_MAX_SIZE))
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=85)
    except Exception:
        log.exception("could not encode a preview image")
        return None
    return ImageFrame(buf.getvalue(), JPEG, node_id, prompt_id, explicit=explicit)


def encode_output_image(image: Any, node_id: str, prompt_id: str) -> ImageFrame | None:
    """An image a node sends to its client (SaveImageWebsocket): a full-size PNG of a PIL
    image or an ``[H, W, C]`` array/tensor in 0..1, rounded to 8 bits as SaveImage does."""
    try:
        buf = io.BytesIO()
        _to_pil(image).save(buf, format="PNG", compress_level=1)
    except Exception:
        log.exception("could not encode an image for the websocket")
        return None
    return ImageFrame(buf.getvalue(), PNG, node_id, prompt_id, always=True)
