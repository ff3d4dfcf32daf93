"""Atomic file writes: a file is either absent or complete, never half-written.

Data goes to a hidden temporary file in the destination folder, is flushed to disk, and is then
renamed into place (``os.replace``, atomic on POSIX and Windows). Readers — ``/view``, a crash
recovery, a user's file browser — never see a partial image.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: Path | str, *, overwrite: bool = True) -> Iterator[IO[bytes]]:
    """Open a temporary file to write ``path`` through; it appears at ``path`` when the block
    ends without error. With ``overwrite=False`` an existing ``path`` raises FileExistsError
    (checked at the rename, so two writers cannot both win)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails with FileExistsError when the name is taken
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: Path | str, data: bytes, *, overwrite: bool = True) -> None:
    with atomic_open(path, overwrite=overwrite) as f:
        f.write(data)
