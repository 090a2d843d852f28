"""Atomic writes: temporary names, leftovers of killed runs, and output folders that cannot be written.

Every output of the project is written under a hidden temporary name in its destination folder and renamed into
place, so a reader never sees a half-written file. The temporary name carries the writer's process and thread ids
(``.<name>.tmp<pid>.<thread><suffix>``, so threads writing in one folder never share one): a run that is killed
mid-write leaves such a file behind, and the next run in that folder removes it (:func:`remove_stale_temporaries`)
unless its process is still alive.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import threading
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from ..errors import OutputError

__all__ = ["ensure_writable_dir", "remove_stale_temporaries", "temp_path", "write_csv_atomic", "write_text_atomic"]

_TEMP = re.compile(r"^\..+\.tmp(?P<pid>\d+)(\.[^/]*)?$")


def temp_path(path: str | PathLike, suffix: str = "") -> Path:
    """The temporary name for writing ``path``: ``<folder>/.<name>.tmp<pid>.<thread><suffix>`` (``suffix`` for
    writers that pick the format from the extension, e.g. ``.nii.gz``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_native_id()}{suffix}")


def write_text_atomic(path: str | PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`temp_path` and a rename; returns ``path``."""
    path = Path(path)
    tmp = temp_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_csv_atomic(path: str | PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` (dicts with the first row's keys as columns) as CSV to ``path``, atomically; returns ``path``."""
    path = Path(path)
    tmp = temp_path(path)
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | PathLike) -> list[Path]:
    """Delete the temporary files / folders (:func:`temp_path` names) in ``folder`` whose writing process is gone;
    returns what was removed. Anything else in the folder is left alone."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TEMP.match(entry.name)
        if m is None or _alive(int(m.group("pid"))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def ensure_writable_dir(folder: str | PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and check that files can be created in it; raises :class:`OutputError` naming
    the folder (not a hidden temporary file) when it cannot be created or written."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(folder, f"cannot create the {what}: {exc.strerror or exc}") from exc
    if not folder.is_dir():
        raise OutputError(folder, f"the {what} is not a folder")
    probe = temp_path(folder / "write-probe")
    try:  # a real file: os.access says yes to root on a read-only mount
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OutputError(folder, f"the {what} is not writable: {exc.strerror or exc}") from exc
    return folder
