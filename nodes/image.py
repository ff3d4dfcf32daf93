"""Image nodes: load from input/, save to output/ (PNG with workflow metadata), preview, and a
few small utilities.

Tensors follow ComfyUI's layout so workflows and plugins carry over: IMAGE is float32
``[batch, height, width, channels]`` in 0..1, MASK is float32 ``[batch, height, width]`` in 0..1.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from PIL.PngImagePlugin import PngInfo

from loom import imageio
from loom.files import (
    expand_prefix,
    input_fingerprint,
    input_path,
    list_input_files,
    missing_input_message,
    next_counter,
    split_prefix,
    write_atomic,
)
from loom.nodeapi import (
    Allocation,
    Combo,
    Hidden,
    Int,
    Link,
    Node,
    NodeResult,
    Output,
    String,
    fraction,
    pixels,
)
from loom.paths import UnsafePathError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif")


# -- reading -------------------------------------------------------------------------------------


def list_input_images(ctx: Any) -> list[str]:
    """Image files under the input folder, recursive, '/'-separated, sorted (hidden ones left out)."""
    return list_input_files(ctx, IMAGE_EXTENSIONS)


def _frame_to_arrays(frame: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """One PIL frame as (RGB float32 [H,W,3] in 0..1, alpha float32 [H,W] or None)."""
    frame = ImageOps.exif_transpose(frame) or frame
    mode = frame.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        rgb = np.asarray(frame, dtype=np.uint16).astype(np.float32) / 65535.0
        return np.repeat(rgb[..., None], 3, axis=2), None
    if mode == "I":  # 32-bit ints; PNGs with 16-bit samples may open like this
        arr = np.asarray(frame, dtype=np.int64).astype(np.float32)
        scale = 65535.0 if arr.max(initial=0) > 255 else 255.0
        rgb = np.clip(arr / scale, 0.0, 1.0)
        return np.repeat(rgb[..., None], 3, axis=2), None
    if mode == "F":
        rgb = np.clip(np.asarray(frame, dtype=np.float32), 0.0, 1.0)
        return np.repeat(rgb[..., None], 3, axis=2), None
    has_alpha = "A" in frame.getbands() or (mode in ("P", "L", "RGB") and "transparency" in frame.info)
    if has_alpha:
        rgba = np.asarray(frame.convert("RGBA"), dtype=np.float32) / 255.0
        return rgba[..., :3], rgba[..., 3]
    return np.asarray(frame.convert("RGB"), dtype=np.float32) / 255.0, None


def load_image_file(path: str | os.PathLike, max_pixels: int = imageio.DEFAULT_MAX_PIXELS
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(IMAGE [B,H,W,3], MASK [B,H,W]) from an image file; every frame of an animated file is one
    batch entry (frames whose size differs from the first are dropped). The mask is 1 where the
    image is transparent, like ComfyUI's; an image with no alpha gets a 64x64 zero mask.
    :class:`loom.imageio.ImageRefused` for other formats and files over ``max_pixels``."""
    images, alphas = [], []
    with imageio.open_image(path, max_pixels=max_pixels) as img:
        size = None
        for frame in imageio.frames(img, max_pixels):
            if size is None:
                size = frame.size
            elif frame.size != size:
                continue  # skipped before it is decoded
            rgb, alpha = _frame_to_arrays(frame)
            images.append(rgb)
            alphas.append(alpha)
    if not images:
        raise ValueError(f"{os.fspath(path)!r} holds no image frames")
    image = torch.from_numpy(np.stack(images)).contiguous()
    if all(a is None for a in alphas):
        mask = torch.zeros((len(images), 64, 64), dtype=torch.float32)
    else:
        h, w = images[0].shape[:2]
        mask = torch.stack([torch.from_numpy(1.0 - a) if a is not None
                            else torch.zeros((h, w), dtype=torch.float32) for a in alphas])
    return image, mask


def _missing_image_message(ctx: Any, name: Any) -> str | None:
    return missing_input_message(ctx, name, "image", "Image file",
                                 " Upload it again or put the file there.")


def _probe(ctx: Any, name: Any, first_frame_only: bool = False
           ) -> tuple[str | None, tuple[int, int, int] | None]:
    """(why the image cannot be loaded, or None; (frames, height, width) when it can), from
    its header only: the format and the pixel budget."""
    try:
        path = input_path(ctx, name)
        st = path.stat()
    except (OSError, UnsafePathError, RuntimeError, TypeError):
        return None, None  # reported by _missing_image_message
    max_pixels = imageio.max_pixels_of(ctx.settings if ctx is not None else None)
    key = (str(path), st.st_size, st.st_mtime_ns, max_pixels, first_frame_only)
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
    try:
        with imageio.open_image(path, max_pixels=max_pixels,
                                first_frame_only=first_frame_only) as img:
            frames = 1 if first_frame_only else imageio.frame_count(img)
            result = None, (frames, img.size[1], img.size[0])
    except imageio.ImageRefused as e:
        result = f"Cannot load {name!r}: {e}", None
    with _probe_lock:
        if len(_probe_cache) > 4096:
            _probe_cache.clear()
        _probe_cache[key] = result
    return result


def _unreadable_image_message(ctx: Any, name: Any, first_frame_only: bool = False) -> str | None:
    return _probe(ctx, name, first_frame_only)[0]


# Counting a GIF's frames reads the whole file: remember the verdict per (path, size, mtime).
_probe_cache: dict[tuple, tuple] = {}
_probe_lock = threading.Lock()


class InputImage(Combo):
    """A combo of the images in the input folder; an unknown name gets an error saying where the
    file should be, rather than a list of the other files."""

    def __init__(self, *, tooltip: str | None = None):
        super().__init__(list_input_images, image_upload=True, tooltip=tooltip)

    def not_in_list_message(self, value: Any, choices: list[str], ctx: Any = None) -> str:
        return _missing_image_message(ctx, value) or super().not_in_list_message(value, choices, ctx)


class LoadImage(Node, category="image", display_name="Load Image"):
    """Loads an image from the input folder. MASK is 1 where the image is transparent."""

    inputs = {"image": InputImage(tooltip="An image in the input folder (upload one, or copy it there)")}
    outputs = (Output("IMAGE"), Output("MASK"))

    @classmethod
    def fingerprint(cls, ctx, image=None, **_):
        return input_fingerprint(ctx, image)

    @classmethod
    def validate_inputs(cls, ctx, image=None, **_):
        return _missing_image_message(ctx, image) or _unreadable_image_message(ctx, image)

    @classmethod
    def allocation(cls, ctx, image=None, **_):
        shape = _probe(ctx, image)[1]
        if shape is None:
            return None
        frames, h, w = shape
        return Allocation(((frames, h, w, 3), (frames, h, w)), ("image",))

    def run(self, image):
        return load_image_file(input_path(self.ctx, image),
                               imageio.max_pixels_of(self.ctx.settings))


class LoadImageMask(Node, category="mask", display_name="Load Image (as Mask)"):
    """Loads one channel of an image from the input folder as a MASK (alpha is inverted: 1 =
    transparent, like LoadImage's mask)."""

    inputs = {
        "image": InputImage(),
        "channel": Combo(["alpha", "red", "green", "blue"]),
    }
    outputs = (Output("MASK"),)

    fingerprint = LoadImage.fingerprint

    @classmethod
    def validate_inputs(cls, ctx, image=None, **_):
        return (_missing_image_message(ctx, image)
                or _unreadable_image_message(ctx, image, first_frame_only=True))

    def run(self, image, channel):
        with imageio.open_image(input_path(self.ctx, image), first_frame_only=True,
                                max_pixels=imageio.max_pixels_of(self.ctx.settings)) as img:
            img = ImageOps.exif_transpose(img) or img
            if img.mode.startswith("I"):
                rgb, _ = _frame_to_arrays(img)
                values = rgb[..., 0]
                if channel == "alpha":
                    values = np.ones_like(values)
            else:
                band = {"alpha": "A", "red": "R", "green": "G", "blue": "B"}[channel]
                values = np.asarray(img.convert("RGBA").getchannel(band), dtype=np.float32) / 255.0
        mask = torch.from_numpy(values.copy())
        if channel == "alpha":
            mask = 1.0 - mask
        return (mask.unsqueeze(0),)


# -- writing -------------------------------------------------------------------------------------


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """One IMAGE entry [H,W,C] (C = 1, 3 or 4) as a PIL image, rounded to 8 bits."""
    arr = image.detach().to("cpu", torch.float32).clamp(0.0, 1.0).mul(255.0).round()
    arr = arr.to(torch.uint8).numpy()
    channels = arr.shape[2]
    if channels == 1:
        return Image.fromarray(arr[..., 0], "L")
    return Image.fromarray(arr, "RGBA" if channels == 4 else "RGB")




def write_png_atomic(img: Image.Image, folder: Path, stem: str, counter: int,
                     pnginfo: PngInfo | None, compress_level: int,
                     on_created=None) -> tuple[str, int]:
    """Write ``{stem}_{counter:05}_.png`` in ``folder`` (see :func:`write_atomic`)."""
    return write_atomic(folder, stem, counter, ".png",
                        lambda f: img.save(f, format="PNG", pnginfo=pnginfo, compress_level=compress_level),
                        on_created)


def png_metadata(prompt: Any, extra_pnginfo: Any) -> PngInfo | None:
    """The ``prompt`` (API format) and each ``extra_pnginfo`` key (``workflow``, …) as JSON
    tEXt chunks: the same chunks ComfyUI writes, so either tool can reopen the image."""
    if prompt is None and not extra_pnginfo:
        return None
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            info.add_text(str(key), json.dumps(value))
    return info


def _as_batch(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be an IMAGE tensor, not {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must be [batch, height, width, 1|3|4], got {list(images.shape)}")
    return images


class SaveImage(Node, category="image", display_name="Save Image"):
    """Saves images as PNG files in the output folder, with the prompt and workflow embedded."""

    output_node = True
    inputs = {
        "images": Link("IMAGE", tooltip="The images to save."),
        "filename_prefix": String("Loom", tooltip=(
            "File name prefix; may include a subfolder ('portraits/face') and tokens such as "
            "%date:yyyy-MM-dd%, %width%, %height%.")),
        "prompt": Hidden("PROMPT"),
        "extra_pnginfo": Hidden("EXTRA_PNGINFO"),
    }
    outputs = ()

    folder_type = "output"
    compress_level = 4

    def _root(self) -> Path:
        paths = self.ctx.paths
        if paths is None:
            raise RuntimeError("no output folder: the node was run without ctx.paths")
        return Path(paths.output_dir if self.folder_type == "output" else paths.temp_dir)

    def _metadata_enabled(self) -> bool:
        return self.ctx.settings is None or not self.ctx.settings.disable_metadata

    def save(self, images: torch.Tensor, filename_prefix: str, prompt: Any = None,
             extra_pnginfo: Any = None) -> NodeResult:
        images = _as_batch(images)
        root = self._root()
        root.mkdir(parents=True, exist_ok=True)
        prefix = expand_prefix(filename_prefix, int(images.shape[2]), int(images.shape[1]))
        folder, stem = split_prefix(root, prefix)
        subfolder = Path(os.path.relpath(folder, os.path.realpath(root))).as_posix()
        subfolder = "" if subfolder == "." else subfolder
        pnginfo = png_metadata(prompt, extra_pnginfo) if self._metadata_enabled() else None
        counter = next_counter(folder, stem)
        results = []
        for image in images:
            self.ctx.check_interrupted()
            # Files in output/ are noted the moment they exist (temp/ is emptied at each start).
            name, counter = write_png_atomic(
                tensor_to_pil(image), folder, stem, counter, pnginfo, self.compress_level,
                self.ctx.saved_file if self.folder_type == "output" else None)
            counter += 1
            results.append({"filename": name, "subfolder": subfolder, "type": self.folder_type})
        return NodeResult(outputs=(), ui={"images": results})

    def run(self, images, filename_prefix="Loom", prompt=None, extra_pnginfo=None):
        return self.save(images, filename_prefix, prompt, extra_pnginfo)


class PreviewImage(SaveImage, display_name="Preview Image"):
    """Shows images in the editor without keeping them: the files go to the temp folder."""

    inputs = {
        "images": Link("IMAGE", tooltip="The images to preview."),
        "prompt": Hidden("PROMPT"),
        "extra_pnginfo": Hidden("EXTRA_PNGINFO"),
    }
    folder_type = "temp"
    compress_level = 1  # speed over size: previews are thrown away

    def run(self, images, prompt=None, extra_pnginfo=None):
        # A random prefix per run, so previews of concurrent prompts never share a counter.
        prefix = f"LoomPreview_{secrets.token_hex(4)}"
        return self.save(images, prefix, prompt, extra_pnginfo)


# -- small utilities -----------------------------------------------------------------------------


class ImageInvert(Node, category="image", display_name="Invert Image"):
    """1 - image, per channel."""

    inputs = {"image": Link("IMAGE")}
    outputs = (Output("IMAGE"),)

    def run(self, image):
        return (1.0 - image,)


class EmptyImage(Node, category="image", display_name="Empty Image"):
    """A batch of images of one solid colour (``color`` is 0xRRGGBB)."""

    inputs = {
        "width": pixels(512, min=1), "height": pixels(512, min=1),
        "batch_size": Int(1, min=1, max=4096),
        "color": Int(0, min=0, max=0xFFFFFF, step=1, display="color"),
    }
    outputs = (Output("IMAGE"),)

    @classmethod
    def allocation(cls, ctx, width=512, height=512, batch_size=1, **_):
        return Allocation(((batch_size, height, width, 3),), ("width", "height", "batch_size"))

    def run(self, width, height, batch_size=1, color=0):
        rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF],
                           dtype=torch.float32) / 255.0
        return (rgb.expand(batch_size, height, width, 3).clone(),)


class SolidMask(Node, category="mask", display_name="Solid Mask"):
    """A mask of one value."""

    inputs = {
        "value": fraction(1.0),
        "width": pixels(512, min=1), "height": pixels(512, min=1),
    }
    outputs = (Output("MASK"),)

    @classmethod
    def allocation(cls, ctx, width=512, height=512, **_):
        return Allocation(((1, height, width),), ("width", "height"))

    def run(self, value, width, height):
        return (torch.full((1, height, width), float(value), dtype=torch.float32),)


class InvertMask(Node, category="mask", display_name="Invert Mask"):
    """1 - mask."""

    inputs = {"mask": Link("MASK")}
    outputs = (Output("MASK"),)

    def run(self, mask):
        return (1.0 - mask,)


NODES = [LoadImage, LoadImageMask, SaveImage, PreviewImage, ImageInvert, EmptyImage, SolidMask,
         InvertMask]
