"""``/view`` (serve an image from output/, input/ or temp/) and ``/upload/image|mask``.

Every client path goes through :func:`loom.paths.safe_join`. Files a browser could execute
(HTML, SVG, XML, anything unknown) are never served inline: they go out as
``application/octet-stream`` attachments, always with ``nosniff``. Uploads are streamed with a
size limit, checked to be real images, and written atomically.
"""

from __future__ import annotations

import asyncio
import io
import mimetypes
import os
import re
from pathlib import Path
from urllib.parse import quote

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from loom import imageio, jsonsafe
from loom.paths import UnsafePathError, safe_join
from loom.server.routes._common import ApiError, bad_request, is_yes, not_found, read_timeout, timed_out
from loom.server.security.headers import INLINE_SAFE_TYPES
from loom.server.state import get_state
from loom.store.files import atomic_open

routes = web.RouteTableDef()

MAX_NAME_LENGTH = 200


def content_disposition(kind: str, filename: str) -> str:
    """A header value safe for any filename (RFC 6266 / 5987)."""
    ascii_name = re.sub(r'[^A-Za-z0-9._ ()-]', "_", filename) or "file"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


@routes.get("/view")
async def view(request: web.Request) -> web.StreamResponse:
    folders = get_state(request).settings.folders
    q = request.query
    filename = q.get("filename")
    if not filename:
        raise bad_request("query parameter 'filename' is required")
    subfolder = q.get("subfolder", "")
    root = folders.root_of(q.get("type") or "output")
    path = safe_join(root, f"{subfolder}/{filename}" if subfolder else filename)
    if not path.is_file():
        raise not_found(f"File {filename!r} not found")
    ctype = (mimetypes.guess_type(path.name)[0] or "application/octet-stream").lower()
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    if ctype in INLINE_SAFE_TYPES:  # shown inline; everything else is a download
        headers["Content-Type"] = ctype
        headers["Content-Disposition"] = content_disposition("inline", path.name)
    else:
        headers["Content-Type"] = "application/octet-stream"
        headers["Content-Disposition"] = content_disposition("attachment", path.name)
    return web.FileResponse(path, headers=headers)


def clean_filename(name: str | None) -> str:
    """The last component of an uploaded file's name, refusing names that are not plain."""
    if not name:
        raise bad_request("the uploaded file has no filename")
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if name in ("", ".", "..") or name.startswith(".") or any(ord(c) < 32 for c in name):
        raise bad_request(f"invalid filename {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        stem, ext = os.path.splitext(name)
        name = stem[:MAX_NAME_LENGTH - len(ext)] + ext
    return name


async def _read_form(request: web.Request, limit: int) -> tuple[dict[str, str], dict[str, tuple]]:
    """Multipart fields (text) and files (filename, bytes), with a total size limit."""
    if not request.content_type.startswith("multipart/"):
        raise bad_request("send the upload as multipart/form-data")
    if request.content_length is not None and request.content_length > limit + 64 * 1024:
        raise _too_large(limit)
    fields: dict[str, str] = {}
    files: dict[str, tuple[str | None, bytes]] = {}
    total = 0
    seconds = read_timeout(request)
    # aiohttp's multipart reader raises several kinds of errors for a malformed body (bad part
    # headers, encodings, boundaries): each is the client's mistake, never a 500.
    try:
        reader = await request.multipart()
        while True:
            async with asyncio.timeout(seconds):
                part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise bad_request("nested multipart bodies are not supported")
            buf = bytearray()
            while True:
                async with asyncio.timeout(seconds):
                    chunk = await part.read_chunk(256 * 1024)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise _too_large(limit)
                buf.extend(chunk)
            if part.filename is not None:
                files[part.name or ""] = (part.filename, bytes(buf))
            else:
                try:
                    fields[part.name or ""] = buf.decode("utf-8")
                except UnicodeDecodeError:
                    raise bad_request(f"form field {part.name!r} is not UTF-8 text") from None
    except TimeoutError:
        raise timed_out(seconds) from None
    except (ValueError, AssertionError, RuntimeError, LookupError, HttpProcessingError) as e:
        raise bad_request(f"malformed multipart body: {e}") from None
    return fields, files


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"The upload is larger than the limit of {limit // 2**20} MB "
                    "(--max-upload-mb)")


def _check_image(data: bytes, max_pixels: int) -> None:
    try:
        imageio.check_image(data, max_pixels=max_pixels)
    except imageio.ImageRefused as e:
        raise bad_request(f"the uploaded file is not an image Loom can load: {e}",
                          "invalid_image") from None


def _store(folder: Path, name: str, data: bytes, overwrite: bool) -> str:
    """Write atomically; without ``overwrite`` a taken name becomes "name (1).ext", ... ."""
    folder.mkdir(parents=True, exist_ok=True)
    if overwrite:
        with atomic_open(folder / name, overwrite=True) as f:
            f.write(data)
        return name
    stem, ext = os.path.splitext(name)
    for i in range(10_000):
        candidate = name if i == 0 else f"{stem} ({i}){ext}"
        if (folder / candidate).exists():
            continue
        try:
            with atomic_open(folder / candidate, overwrite=False) as f:
                f.write(data)
            return candidate
        except FileExistsError:
            continue  # another upload took it between the check and the rename
    raise ApiError(409, "name_taken", f"too many files named like {name!r}")


async def _upload(request: web.Request, mask: bool) -> web.Response:
    state = get_state(request)
    limit = state.settings.max_upload_mb * 2**20
    fields, files = await _read_form(request, limit)
    if "image" not in files:
        raise bad_request("the form has no 'image' file field")
    filename, data = files["image"]
    name = clean_filename(filename)
    folder_type = fields.get("type") or "input"
    subfolder = fields.get("subfolder", "")
    overwrite = is_yes(fields.get("overwrite"))
    folder = safe_join(state.settings.folders.root_of(folder_type), subfolder)
    max_pixels = imageio.max_pixels_of(state.settings)
    await asyncio.to_thread(_check_image, data, max_pixels)
    if mask:
        data = await asyncio.to_thread(_apply_mask, state, fields.get("original_ref"), data,
                                       max_pixels)
        if not name.lower().endswith(".png"):
            name = os.path.splitext(name)[0] + ".png"
    stored = await asyncio.to_thread(_store, folder, name, data, overwrite)
    return web.json_response({"name": stored, "subfolder": subfolder, "type": folder_type})


def _apply_mask(state, original_ref: str | None, mask_data: bytes, max_pixels: int) -> bytes:
    """ComfyUI's mask upload: the mask's alpha becomes the alpha of the original image."""
    if not original_ref:
        raise bad_request("'original_ref' is required for a mask upload")
    try:
        ref = jsonsafe.loads(original_ref)
    except jsonsafe.JSONError as e:
        raise bad_request(f"'original_ref' is not valid JSON: {e}") from None
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise bad_request("'original_ref' must be an object with a 'filename'")
    sub = ref.get("subfolder") or ""
    if not isinstance(sub, str):
        raise bad_request("'original_ref.subfolder' must be a string")
    try:
        root = state.settings.folders.root_of(ref.get("type") or "input")
        path = safe_join(root, f"{sub}/{ref['filename']}" if sub else ref["filename"])
    except (UnsafePathError, TypeError) as e:
        raise bad_request(str(e), "invalid_path") from None
    if not path.is_file():
        raise not_found(f"original image {ref['filename']!r} not found")
    try:
        with imageio.open_image(path, max_pixels=max_pixels, first_frame_only=True) as original, \
                imageio.open_image(mask_data, max_pixels=max_pixels, first_frame_only=True) as mask:
            return _masked_png(original, mask)
    except (imageio.ImageRefused, OSError, ValueError, SyntaxError, EOFError) as e:
        raise bad_request(f"cannot apply the mask: {e}", "invalid_image") from None


def _masked_png(original, mask) -> bytes:
    result = original.convert("RGBA")
    alpha = mask.convert("RGBA").getchannel("A").resize(result.size)
    result.putalpha(alpha)
    out = io.BytesIO()
    result.save(out, format="PNG")
    return out.getvalue()


@routes.post("/upload/image")
async def upload_image(request: web.Request) -> web.Response:
    return await _upload(request, mask=False)


@routes.post("/upload/mask")
async def upload_mask(request: web.Request) -> web.Response:
    return await _upload(request, mask=True)
