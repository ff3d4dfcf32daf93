"""Opening image files Loom did not write: uploads and whatever is in ``input/``.

Two rules, checked before any pixel is decoded:

- **Formats**: only PNG, JPEG (and its multi-picture variant MPO, as phones save it), WebP, GIF,
  BMP and TIFF are opened. Pillow knows many more, some of which run other programs (EPS calls
  Ghostscript) or are rarely-exercised parsers; Pillow is told to try only these, so anything
  else is refused before a decoder sees it.
- **Pixels**: the whole decode is budgeted: width × height × frames, with each frame's own size
  (TIFF pages may differ), against ``max_pixels`` (``--max-image-megapixels``). A 2 KB GIF of
  100 frames of 4000×4000, or a 94 KB PNG of 10000×10000, is refused from its header.

The server's upload routes and the image-loading nodes use this module, and nothing else opens
such files. It lives beside :mod:`loom.paths` because both the server and the nodes need it.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

# Pillow's opener names (its JPEG opener also returns MPO pictures).
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
FORMAT_NAMES = "PNG, JPEG, WebP, GIF, BMP or TIFF"
# 70 megapixels: an 8192×8192 image, or 256 frames of 512×512, fit; 10000×10000 does not. As
# IMAGE tensors (float32 RGB plus a mask) 70 MP is about 1.1 GB.
DEFAULT_MEGAPIXELS = 70.0
DEFAULT_MAX_PIXELS = int(DEFAULT_MEGAPIXELS * 1e6)
# First bytes of formats people try, to name what was refused.
_SIGNATURES = {
    b"%!PS": "PostScript (EPS)",
    b"\xc5\xd0\xd3\xc6": "EPS",
    b"%PDF": "PDF",
    b"8BPS": "Photoshop (PSD)",
    b"\x00\x00\x01\x00": "ICO",
    b"<?xml": "XML/SVG",
    b"<svg": "SVG",
    b"\x00\x00\x00\x0cjP  ": "JPEG 2000",
    b"\xffO\xffQ": "JPEG 2000",
    b"DDS ": "DDS",
    b"qoif": "QOI",
}

Source = str | os.PathLike | bytes | IO[bytes]


class ImageRefused(ValueError):
    """The file is not an image Loom reads, or it would decode to too many pixels. ``str()`` is
    a message for the user."""


def max_pixels_of(settings: Any) -> int:
    """The pixel budget a server's settings give (``max_image_megapixels``)."""
    megapixels = getattr(settings, "max_image_megapixels", None)
    return int(megapixels * 1e6) if megapixels else DEFAULT_MAX_PIXELS


@contextmanager
def open_image(
    source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS, first_frame_only: bool = False
) -> Iterator[Any]:
    """A PIL image of an allowed format whose decode fits ``max_pixels`` (every frame, unless
    ``first_frame_only``); :class:`ImageRefused` otherwise. Nothing is decoded yet."""
    from PIL import Image, UnidentifiedImageError

    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings():  # Pillow's size warning: our own budget decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp, formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise ImageRefused(f"{_what(source)} is not a {FORMAT_NAMES} image{_named_format(source)}") from None
    except Image.DecompressionBombError as e:
        raise ImageRefused(f"{_what(source)} is too large to decode ({e})") from None
    except Exception as e:  # noqa: BLE001 - Pillow's parsers raise many kinds on damaged files
        raise ImageRefused(f"{_what(source)} cannot be read as an image ({_text(e)})") from None
    try:
        frames = 1 if first_frame_only else frame_count(img)
        _check(img.size, frames, max_pixels)
        yield img
    finally:
        img.close()


def frame_count(img: Any) -> int:
    """Frames an image will decode to (MPO's second picture is a different view: one frame)."""
    if img.format == "MPO":
        return 1
    try:
        return max(1, int(getattr(img, "n_frames", 1)))
    except Exception as e:  # noqa: BLE001 - as above
        raise ImageRefused(f"the image's frames cannot be read ({_text(e)})") from None


def frames(img: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Any]:
    """Each frame of ``img`` in turn (seeked, not yet decoded), refusing the file when the
    frames' own sizes add up past ``max_pixels`` (TIFF pages need not share a size)."""
    total = 0
    count = frame_count(img)
    for index in range(count):
        try:
            img.seek(index)
        except EOFError:
            return
        except Exception as e:  # noqa: BLE001 - as above
            raise ImageRefused(f"frame {index + 1} cannot be read ({_text(e)})") from None
        w, h = img.size
        total += w * h
        if total > max_pixels:
            raise ImageRefused(_over(f"{count} frames, the first {index + 1} alone", total, max_pixels))
        yield img


def check_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """Check uploaded bytes without decoding pixels (PNG checksums are verified); returns the
    format. :class:`ImageRefused` when they are not an allowed image within the budget."""
    with open_image(data, max_pixels=max_pixels) as img:
        fmt = img.format
        if fmt == "TIFF":  # pages may differ in size (animations keep one canvas size)
            for _ in frames(img, max_pixels):
                pass
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
            img.verify()
    except Exception as e:  # noqa: BLE001 - as above
        raise ImageRefused(f"the image is damaged ({_text(e)})") from None
    return fmt


def _check(size: tuple[int, int], frame_total: int, max_pixels: int) -> None:
    w, h = size
    pixels = w * h * frame_total
    if pixels > max_pixels:
        what = f"{w}×{h}" + (f" × {frame_total} frames" if frame_total > 1 else "")
        raise ImageRefused(_over(what, pixels, max_pixels))


def _over(what: str, pixels: int, max_pixels: int) -> str:
    return (
        f"the image is too large to load: {what} = {pixels / 1e6:.3g} megapixels, over the "
        f"limit of {max_pixels / 1e6:g} (--max-image-megapixels)"
    )


def _text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _what(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"{os.path.basename(os.fspath(source))!r}"
    return "the file"


def _named_format(source: Source) -> str:
    try:
        if isinstance(source, (bytes, bytearray)):
            head = bytes(source[:16])
        elif isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                head = f.read(16)
        else:
            return ""
    except OSError:
        return ""
    for magic, name in _SIGNATURES.items():
        if head.startswith(magic):
            return f" (it looks like {name}, which Loom does not open)"
    return ""
