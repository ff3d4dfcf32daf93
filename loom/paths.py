"""Where Loom's files live: models/, input/, output/, temp/, user/; safe path joining.

Every path that comes from a client (a /view filename, an upload subfolder, an image name, a
userdata file) goes through :func:`safe_join`, which refuses anything that could leave its root.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# The models/ subfolders Loom knows (ComfyUI's names) and the file endings each may hold.
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")
MODEL_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": MODEL_EXTENSIONS,
    "vae": MODEL_EXTENSIONS,
    "loras": MODEL_EXTENSIONS,
    "embeddings": MODEL_EXTENSIONS,
    "controlnet": MODEL_EXTENSIONS,
    "upscale_models": MODEL_EXTENSIONS,
    "facerestore_models": MODEL_EXTENSIONS,
    "facedetection": MODEL_EXTENSIONS,
    "clip": MODEL_EXTENSIONS,
    "text_encoders": MODEL_EXTENSIONS,
    "clip_vision": MODEL_EXTENSIONS,
    "unet": MODEL_EXTENSIONS,
    "diffusion_models": MODEL_EXTENSIONS,
    "vae_approx": MODEL_EXTENSIONS,
    "hypernetworks": MODEL_EXTENSIONS,
    "style_models": MODEL_EXTENSIONS,
    "annotators": MODEL_EXTENSIONS,
    "diffusers": (),  # folders holding model_index.json
    "configs": (".yaml", ".json"),
}

# Folders that may also hold diffusers model folders (config.json + weights), listed by name.
FOLDER_MODELS = frozenset({"controlnet"})

# Linux's NAME_MAX and a conservative part of PATH_MAX (the root's own path comes on top).
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 2048
# The temporary names of atomic writes: ``.NAME.<12 hex>.EXT.tmp`` (loom.files.write_atomic:
# SaveImage, SaveLatent) and ``.NAME.<8 chars>.tmp`` (tempfile.mkstemp, loom.store.files).
STALE_TEMP_FILE = re.compile(r"\..+\.(?:[0-9a-f]{12}\.[A-Za-z0-9]{1,16}|[a-z0-9_]{8})\.tmp")


class UnsafePathError(ValueError):
    """A client-supplied path tried to leave its folder (or was malformed)."""


def safe_join(root: Path, relative: str) -> Path:
    """``root / relative``, refusing absolute paths, ``..``, backslashes, drive letters, NUL
    bytes and symlinks that resolve outside ``root``. ``relative`` may be empty (the root)."""
    if not isinstance(relative, str):
        raise UnsafePathError("path must be a string")
    if "\x00" in relative or "\\" in relative:
        raise UnsafePathError(f"invalid character in path {relative!r}")
    if relative.startswith("/") or (len(relative) > 1 and relative[1] == ":"):
        raise UnsafePathError(f"absolute paths are not allowed: {relative!r}")
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafePathError(f"'..' is not allowed in paths: {relative!r}")
    try:
        sizes = [len(p.encode("utf-8")) for p in parts]
    except UnicodeEncodeError:
        raise UnsafePathError(f"path is not valid Unicode text: {relative[:80]!r}") from None
    # The OS would refuse these with ENAMETOOLONG; say so before any system call does.
    if any(size > MAX_NAME_BYTES for size in sizes) or sum(sizes) > MAX_PATH_BYTES:
        raise UnsafePathError(f"file name too long (at most {MAX_NAME_BYTES} bytes per name, "
                              f"{MAX_PATH_BYTES} in all): {relative[:80]!r}…")
    root_real = Path(os.path.realpath(root))
    candidate = root_real.joinpath(*parts)
    real = Path(os.path.realpath(candidate))
    if real != root_real and root_real not in real.parents:
        raise UnsafePathError(f"path leaves its folder: {relative!r}")
    return real


@dataclass
class Folders:
    """The folders of one Loom installation. Passed around; never a global."""

    base: Path
    models_dir: Path
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    user_dir: Path
    _listing: dict[str, tuple[float, list[str]]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def under(cls, base: Path, *, models_dir: Path | None = None, input_dir: Path | None = None,
              output_dir: Path | None = None, temp_dir: Path | None = None,
              user_dir: Path | None = None) -> Folders:
        base = Path(base).resolve()
        return cls(base=base,
                   models_dir=Path(models_dir or base / "models").resolve(),
                   input_dir=Path(input_dir or base / "input").resolve(),
                   output_dir=Path(output_dir or base / "output").resolve(),
                   temp_dir=Path(temp_dir or base / "temp").resolve(),
                   user_dir=Path(user_dir or base / "user").resolve())

    def create(self) -> None:
        for d in (self.input_dir, self.output_dir, self.temp_dir, self.user_dir):
            d.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FOLDERS:
            (self.models_dir / name).mkdir(parents=True, exist_ok=True)

    def clear_temp(self) -> int:
        """Empty temp/ (previews of earlier sessions); returns how many entries were removed.
        Symlinks are removed, never followed."""
        removed = 0
        if not self.temp_dir.is_dir():
            return 0
        for entry in self.temp_dir.iterdir():
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed += 1
            except OSError:
                pass
        return removed

    def remove_stale_temp_files(self) -> int:
        """Remove the half-written files of atomic writes (``.NAME.RANDOM.tmp``) that a killed
        Loom left in output/ and input/; returns how many. Links are not followed. Run at
        start-up, holding the store's lock: no write of this server is in flight."""
        removed = 0
        for root in (self.output_dir, self.input_dir):
            for folder, _dirs, files in os.walk(root, followlinks=False):
                for name in files:
                    if STALE_TEMP_FILE.fullmatch(name):
                        try:
                            os.unlink(os.path.join(folder, name))
                            removed += 1
                        except OSError:
                            pass
        return removed

    def remove_output_file(self, path: str | Path) -> bool:
        """Delete a file a killed prompt wrote, if it lies in output/ or temp/ (never elsewhere,
        whatever the database says); True when it was there."""
        path = Path(path)
        try:
            real = path.parent.resolve() / path.name
        except OSError:
            return False
        if not any(real.is_relative_to(root.resolve()) for root in (self.output_dir, self.temp_dir)):
            return False
        try:
            real.unlink()
            return True
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            return False

    def root_of(self, kind: str) -> Path:
        """The folder for a ``type`` of /view and uploads: output, input or temp."""
        roots = {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}
        if kind not in roots:
            raise UnsafePathError(f"unknown folder type {kind!r}: use output, input or temp")
        return roots[kind]

    # -- models ------------------------------------------------------------------------------

    def model_folder(self, folder: str) -> Path:
        if folder not in MODEL_FOLDERS:
            raise KeyError(f"unknown model folder {folder!r}")
        return self.models_dir / folder

    def folder_hint(self, folder: str) -> str:
        return f"models/{folder}/ ({self.model_folder(folder)})"

    def list_models(self, folder: str) -> list[str]:
        """Model files under ``models/<folder>`` (recursive, '/'-separated, sorted). Cached until
        the folder tree's modification times change."""
        root = self.model_folder(folder)
        if not root.is_dir():
            return []
        stamp = _tree_mtime(root)
        with self._lock:
            cached = self._listing.get(folder)
            if cached and cached[0] == stamp:
                return cached[1]
        exts = MODEL_FOLDERS[folder]
        found = []
        for rel_dir, dirnames, filenames in walk_folder(root):
            if folder == "diffusers":
                if "model_index.json" in filenames:
                    found.append(rel_dir or ".")
                    dirnames[:] = []
                continue
            if folder in FOLDER_MODELS and rel_dir and "config.json" in filenames:
                # a diffusers model folder (config.json + weights): listed as one entry
                found.append(rel_dir)
                dirnames[:] = []
                continue
            found += [_join(rel_dir, f) for f in filenames if f.lower().endswith(exts)]
        found.sort(key=str.lower)
        with self._lock:
            self._listing[folder] = (stamp, found)
        return found

    def resolve_model(self, folder: str, name: str) -> Path:
        """Full path of model ``name`` in ``folder``; FileNotFoundError names where it belongs."""
        path = safe_join(self.model_folder(folder), name)
        if not path.exists():
            raise FileNotFoundError(f"Model file {name!r} was not found in "
                                    f"{self.folder_hint(folder)}. Put the file there.")
        return path


def walk_folder(root: str | os.PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` for folders a user fills: (folder relative to ``root`` with '/' separators,
    '' for the root; its subfolders, sorted, which the caller may prune; its files, sorted).
    Hidden names are left out. Symlinked folders are never entered, so a link loop cannot
    trap the walk and no link leads out of ``root`` or lists a folder twice; a symlinked file
    is listed only when it points to a file inside ``root`` (what :func:`safe_join` opens)."""
    root_real = os.path.realpath(root)
    inside = root_real.rstrip(os.sep) + os.sep
    for dirpath, dirnames, filenames in os.walk(root_real):  # followlinks=False
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not os.path.islink(os.path.join(dirpath, d)))
        files = []
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                target = os.path.realpath(full)
                if not (target.startswith(inside) and os.path.isfile(target)):
                    continue
            files.append(name)
        rel = os.path.relpath(dirpath, root_real)
        yield ("" if rel == "." else Path(rel).as_posix()), dirnames, files


def _join(rel_dir: str, name: str) -> str:
    return f"{rel_dir}/{name}" if rel_dir else name


def _tree_mtime(root: Path) -> float:
    """Newest mtime among ``root`` and its subfolders (file adds/removes change a folder's)."""
    newest = root.stat().st_mtime
    for rel_dir, dirnames, _ in walk_folder(root):
        for d in dirnames:
            try:
                newest = max(newest, os.stat(os.path.join(root, rel_dir, d)).st_mtime)
            except OSError:
                pass
    return newest
