"""Files that nodes read from input/ and write to output/ and temp/.

Reading: listing the input folder, resolving a name in it safely, fingerprinting a file by its
content. Writing: ComfyUI's ``filename_prefix`` (subfolders, %date% tokens), the
``{stem}_{counter:05}_{ext}`` names, and atomic writes so no reader sees a partial file.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from loom.paths import UnsafePathError, safe_join, walk_folder


def list_input_files(ctx: Any, extensions: tuple[str, ...]) -> list[str]:
    """Files with one of ``extensions`` under the input folder, recursive, '/'-separated, sorted
    (hidden ones and symlinks that lead elsewhere left out: see :func:`walk_folder`)."""
    paths = ctx.paths if ctx is not None else None
    root = getattr(paths, "input_dir", None)
    if root is None or not os.path.isdir(root):
        return []
    found = [f"{rel}/{name}" if rel else name for rel, _, names in walk_folder(root)
             for name in names if name.lower().endswith(extensions)]
    return sorted(found, key=str.lower)


def model_path(ctx: Any, folder: str, name: str) -> Path:
    """``name`` in the models folder ``folder`` (checked against escapes and missing files)."""
    paths = ctx.paths if ctx is not None else None
    if paths is None:
        raise RuntimeError(f"no models folder: the node was run without ctx.paths ({folder}/{name})")
    return paths.resolve_model(folder, name)


def file_identity(path: str | Path) -> tuple[str, int, int]:
    """(name, size, mtime_ns): changes when the file is replaced. Cheap, unlike a content hash:
    model files are gigabytes."""
    st = os.stat(path)
    return (str(path), st.st_size, st.st_mtime_ns)


def model_fingerprint(ctx: Any, folder: str, name: Any) -> Any:
    """A model file's identity (for a folder such as a diffusers model: of every file in it), or
    None when it cannot be read (the node then fails at validation or run time with the real
    reason). Part of a loader's cache signature, so a file replaced on disk is loaded again."""
    try:
        path = model_path(ctx, folder, name)
        if path.is_dir():
            return tuple(file_identity(p) for p in sorted(path.rglob("*")) if p.is_file())
        return file_identity(path)
    except (OSError, ValueError, RuntimeError, TypeError):
        return None


def input_path(ctx: Any, name: str) -> Path:
    paths = ctx.paths if ctx is not None else None
    if paths is None:
        raise RuntimeError("no input folder: the node was run without ctx.paths")
    return safe_join(paths.input_dir, name)


def input_fingerprint(ctx: Any, name: Any) -> str | None:
    """A loader's cache fingerprint for a file of the input folder: its content hash, or None
    when it cannot be read (validation then says why)."""
    try:
        return content_digest(input_path(ctx, name))
    except (OSError, UnsafePathError, RuntimeError, TypeError):
        return None


def missing_input_message(ctx: Any, name: Any, noun: str, file_noun: str, advice: str = "") -> str | None:
    """Why ``name`` cannot be read from the input folder ("Invalid {noun} name …", "{file_noun}
    … was not found …"), or None when it is there (or there is no input folder to look in)."""
    if not isinstance(name, str):
        return None
    try:
        path = input_path(ctx, name)
    except UnsafePathError as e:
        return f"Invalid {noun} name {name!r}: {e}"
    except RuntimeError:
        return None
    if not path.is_file():
        return f"{file_noun} {name!r} was not found in the input folder ({ctx.paths.input_dir}).{advice}"
    return None


# Hashing a big file on every queue is wasteful: remember the hash per (path, size, mtime).
_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def content_digest(path: Path) -> str:
    """The SHA-256 of the file's bytes: an input image uploaded again with the same bytes keeps
    its cached results (each version is read once: the hash is remembered per name, size and
    mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _hash_lock:
        if len(_hash_cache) > 4096:
            _hash_cache.clear()
        _hash_cache[key] = digest
    return digest


_DATE_TOKENS = {"yyyy": "%Y", "yy": "%y", "MM": "%m", "dd": "%d", "hh": "%H", "mm": "%M", "ss": "%S"}


def expand_prefix(prefix: str, width: int, height: int, now: float | None = None) -> str:
    """ComfyUI's filename_prefix tokens: %width%, %height%, %year%, %month%, %day%, %hour%,
    %minute%, %second% and %date:yyyy-MM-dd hhmmss% (any mix of those fields)."""
    t = time.localtime(now)
    simple = {"width": str(width), "height": str(height), "year": f"{t.tm_year:04}",
              "month": f"{t.tm_mon:02}", "day": f"{t.tm_mday:02}", "hour": f"{t.tm_hour:02}",
              "minute": f"{t.tm_min:02}", "second": f"{t.tm_sec:02}"}

    def date(m: re.Match) -> str:
        fmt = re.sub("yyyy|yy|MM|dd|hh|mm|ss", lambda k: _DATE_TOKENS[k.group(0)], m.group(1))
        return time.strftime(fmt, t)

    prefix = re.sub(r"%date:([^%]+)%", date, prefix)
    return re.sub(r"%(\w+)%", lambda m: simple.get(m.group(1), m.group(0)), prefix)


def split_prefix(root: Path, prefix: str) -> tuple[Path, str]:
    """The folder (inside ``root``, created) and file stem a ``filename_prefix`` names."""
    if not prefix or prefix.endswith("/"):
        raise ValueError(f"filename_prefix {prefix!r} must end with a file name, not a folder")
    # safe_join refuses '..', absolute paths and symlinked folders that lead out of root.
    target = safe_join(root, prefix)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent, target.name


def next_counter(folder: Path, stem: str, ext: str = ".png") -> int:
    pattern = re.compile(re.escape(stem) + r"_(\d+)_?" + re.escape(ext) + "$")
    highest = 0
    for name in os.listdir(folder):
        m = pattern.fullmatch(name)
        if m:
            highest = max(highest, int(m.group(1)))
    return highest + 1


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(folder: Path, stem: str, counter: int, ext: str, write,
                 on_created=None) -> tuple[str, int]:
    """Write ``{stem}_{counter:05}_{ext}`` in ``folder`` with ``write(file)`` so that no reader
    ever sees a partial file: the bytes go to a temporary file in the same folder, are fsynced,
    and the file then gets its name in one step. If another writer took that name meanwhile,
    the next counter is used. ``on_created(path)`` is called the moment the name is taken (a
    node passes ``ctx.saved_file``). Returns (file name, counter used)."""
    # Not tempfile.mkstemp: its files are private (0600); this one keeps the umask's mode.
    while True:
        tmp = str(folder / f".{stem[:40]}.{secrets.token_hex(6)}{ext}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        while True:
            name = f"{stem}_{counter:05}_{ext}"
            final = folder / name
            try:
                os.link(tmp, final)  # atomic, and fails instead of overwriting
            except FileExistsError:
                counter += 1
                continue
            except OSError:  # file systems without hard links: rename (may replace)
                if final.exists():
                    counter += 1
                    continue
                os.replace(tmp, final)
            break
        if on_created is not None:
            on_created(final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(folder)
    return name, counter
