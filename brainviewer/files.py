"""Writing files without losing anything a user made.

* :func:`write_atomic` replaces a file through a temporary file and a rename: a reader sees
  the old content or the new, never half of it (status files, pointers such as ``ACTIVE``).
* :func:`write_new` creates a file and never replaces one, not even one that appeared while
  the data was being written (exports, predictions, indexes, corrections); its mode follows the
  umask, like a file made with ``open()`` (not the temporary file's 0600).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _encode(data: bytes | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def _temp_beside(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return Path(tmp)


def _umask() -> int | None:
    """This process's umask, read without changing it (``os.umask`` sets it process-wide, which would race
    with the app's other threads); ``None`` where ``/proc/self/status`` does not tell it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (str as UTF-8) to ``path``, replacing it atomically."""
    path = Path(path)
    tmp = _temp_beside(path, _encode(data))
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_new(path: str | Path, data: bytes | str) -> Path:
    """Create ``path`` with ``data`` (str as UTF-8), atomically.

    Raises:
        FileExistsError: ``path`` exists, checked at the moment it is created (a hard link
        from the temporary file; on a file system without hard links, just before a rename).
    """
    path = Path(path)
    tmp = _temp_beside(path, _encode(data))
    try:
        umask = _umask()
        if umask is not None:  # the temporary file is 0600; a new file is created as open() would make it
            os.chmod(tmp, 0o666 & ~umask)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(f"{path} already exists; choose another name.") from None
        except OSError:  # no hard links on this file system
            if path.exists():
                raise FileExistsError(f"{path} already exists; choose another name.") from None
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_json_object(path: str | Path) -> dict:
    """A JSON object from ``path``, or ``{}`` when it is missing, unreadable (being rewritten) or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def pid_exists(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (any program, any user): decides whether the writer
    of a temporary file (a per-process folder, a partial copy) may still be using it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
