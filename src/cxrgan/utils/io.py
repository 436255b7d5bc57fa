"""Atomic output and content hashing.

Every file cxrgan writes goes to a temporary name in the destination folder first and is renamed into
place when complete, so an interrupted process never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, directory: bool) -> None:
    """Give a temporary file/directory the permissions a plain ``open``/``mkdir`` would have."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, read in chunks (bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _publish_mode(tmp_path, directory=False)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


# Temporaries named by atomic_directory (``.NAME.partial-PID-XXXX``, ``.NAME.old-PID``) and atomic_path
# (``.NAME.PID-XXXX.partial``): the writer's PID tells a dead process's leftovers from a live writer's.
_DIR_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)(?:-.*)?$")
_FILE_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[^/]*\.partial$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def recover_directory(path: str | os.PathLike[str]) -> list[str]:
    """Clean up after a process that was killed inside :func:`atomic_directory` for ``path``: its temporary
    ``.NAME.partial-PID-*`` directories are removed, and a ``.NAME.old-PID`` copy (the previous complete version,
    moved aside just before the new one took its place) is put back when ``path`` is missing, else removed.
    Only leftovers of processes that are no longer alive are touched. Returns what was done."""
    path = Path(path)
    done: list[str] = []
    if not path.parent.is_dir():
        return done
    for entry in path.parent.glob(f".{path.name}.*"):
        m = _DIR_LEFTOVER.match(entry.name)
        if not m or m["name"] != path.name or _alive(int(m["pid"])):
            continue
        if m["kind"] == "old" and not path.exists():
            os.replace(entry, path)
            done.append(f"restored {path} from an interrupted replacement")
        else:
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"removed {entry.name} left by an interrupted run")
    return done


def sweep_partials(folder: str | os.PathLike[str], recursive: bool = False) -> list[str]:
    """Clean up what killed processes left in ``folder`` (and below, with ``recursive``): temporary directories
    through :func:`recover_directory`, temporary files of :func:`atomic_path` whose writer is gone."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    done: list[str] = []
    entries = sorted(folder.rglob(".*") if recursive else folder.glob(".*"))
    for entry in entries:
        if entry.is_dir() and (m := _DIR_LEFTOVER.match(entry.name)):
            done += recover_directory(entry.parent / m["name"])
        elif entry.is_file() and (m := _FILE_LEFTOVER.match(entry.name)) and not _alive(int(m["pid"])):
            entry.unlink(missing_ok=True)
            done.append(f"removed {entry.name} left by an interrupted run")
    return done


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path``; on success it becomes ``path``.

    The temporary directory is named ``.NAME.partial-XXXX`` so an interrupted run can never be
    mistaken for a complete result. With ``overwrite`` an existing ``path`` is replaced only once the
    new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{os.getpid()}-", dir=path.parent))
    try:
        yield tmp
        _publish_mode(tmp, directory=True)
        if path.exists() and overwrite:
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
