"""Which server files a visitor may open: typed paths for a local user, the operator's lists in demo mode.

* Outside demo mode a local user types dataset folders, groups CSVs and run folders, as ever; the
  small files read from such paths (groups CSVs, ``split.json``) must be regular files no bigger than
  :data:`MAX_TEXT_FILE_BYTES` (:func:`checked_file`: ``/dev/zero`` or a FIFO is refused before it is
  opened), and messages name the path but never echo what the file holds.
* In demo mode (``$BRAINVIEWER_DEMO``) no widget takes a server path. Datasets, groups CSVs and run
  splits come from lists the operator sets (:data:`DATASETS_ENV`, :data:`GROUPS_ENV`, :data:`SPLITS_ENV`:
  ``name=path`` pairs separated by ``;`` or the OS path separator) and are offered by name in selectboxes;
  datasets open with ``confine=True`` (an index may not point outside its folder). Messages name the
  entry, never a path or whether one exists.

No Streamlit here: the widgets are in :mod:`brainviewer.ui.sidebar` and the pages' helpers.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

from brainviewer.data.datasets import DATA_ENV
from brainviewer.data.split import SPLIT_FILE
from brainviewer.limits import MIB, env_limit, raise_hint

logger = logging.getLogger(__name__)

#: Set to 1 on a public demo: no training from the browser, and no server path typed by a visitor is read.
DEMO_ENV = "BRAINVIEWER_DEMO"
#: Datasets offered in demo mode, ``name=path`` pairs (``$BRAINVIEWER_DATA`` is offered too).
DATASETS_ENV = "BRAINVIEWER_DATASETS"
#: Groups CSVs offered on the Evaluation page in demo mode (a dataset's own labels.csv is offered too).
GROUPS_ENV = "BRAINVIEWER_GROUPS"
#: Run folders or split.json files offered on the Evaluation page in demo mode (the runs folder's runs too).
SPLITS_ENV = "BRAINVIEWER_SPLITS"
MAX_TEXT_FILE_ENV = "BRAINVIEWER_MAX_TEXT_FILE_MB"
#: Largest groups CSV or split.json the app reads.
MAX_TEXT_FILE_BYTES = env_limit(MAX_TEXT_FILE_ENV, 16) * MIB

#: The entry of a demo selectbox that opens nothing.
NONE_CHOICE = "(none)"
_SEPARATORS = re.compile("[;\n" + re.escape(os.pathsep) + "]")


class ServerFileError(ValueError):
    """A server file the app will not read; the message names the path, never the file's content."""


def demo_mode() -> bool:
    """Whether ``$BRAINVIEWER_DEMO`` asks for a public demo."""
    return os.environ.get(DEMO_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def parse_named_paths(raw: str) -> dict[str, str]:
    """``name=path`` entries separated by ``;``, new lines or ``os.pathsep`` -> ``{name: path}``, in order.

    An entry without ``=`` is named after its last path component; a repeated name keeps its first path.
    """
    named: dict[str, str] = {}
    for entry in _SEPARATORS.split(raw or ""):
        name, sep, path = entry.strip().partition("=")
        if not sep:
            name, path = "", name
        path = path.strip()
        if not path:
            continue
        path = str(Path(path).expanduser())
        name = name.strip() or Path(path).name or path
        if name in named:
            logger.warning("the name %r is listed twice; its first path is used", name)
            continue
        named[name] = path
    return named


def named_datasets() -> dict[str, str]:
    """The datasets an operator offers: ``$BRAINVIEWER_DATA`` first (when set), then ``$BRAINVIEWER_DATASETS``."""
    listed = parse_named_paths(os.environ.get(DATASETS_ENV, ""))
    default = os.environ.get(DATA_ENV, "").strip()
    if not default:
        return listed
    default = str(Path(default).expanduser())
    if default in listed.values():
        name = next(n for n, p in listed.items() if p == default)
        return {name: default, **{n: p for n, p in listed.items() if n != name}}
    name = Path(default).name or "default"
    while name in listed:
        name += " (default)"
    return {name: default, **listed}


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (links resolved) lies in ``folder`` (links resolved)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def named_groups(dataset_root: str | Path | None) -> dict[str, str]:
    """Groups CSVs offered in demo mode: the dataset's own ``labels.csv`` (when it lies in its folder),
    then ``$BRAINVIEWER_GROUPS``."""
    named: dict[str, str] = {}
    if dataset_root is not None:
        root = Path(dataset_root)
        labels = root / "labels.csv"
        if labels.is_file() and inside(labels, root):
            named["labels.csv of this dataset"] = str(labels)
    for name, path in parse_named_paths(os.environ.get(GROUPS_ENV, "")).items():
        named.setdefault(name, path)
    return named


def named_splits(runs_dir: str | Path) -> dict[str, str]:
    """Splits offered in demo mode: ``$BRAINVIEWER_SPLITS``, then every run of the runs folder with a split."""
    named = dict(parse_named_paths(os.environ.get(SPLITS_ENV, "")))
    try:
        folders = sorted(p for p in Path(runs_dir).iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        folders = []
    for folder in folders:
        if (folder / SPLIT_FILE).is_file():
            named.setdefault(f"run {folder.name}", str(folder))
    return named


def checked_file(path: str | Path, what: str, max_bytes: int = MAX_TEXT_FILE_BYTES) -> Path:
    """``path`` if it is a regular file of at most ``max_bytes`` (links followed), to be read as ``what``.

    Raises:
        ServerFileError: missing, not a regular file (a device, FIFO or folder), or too big; the
        message names the path the user gave and the limit, never the file's content.
    """
    path = Path(path).expanduser()
    try:
        info = path.stat()
    except OSError:
        raise ServerFileError(f"{path} could not be read as {what}.") from None
    if not stat.S_ISREG(info.st_mode):
        raise ServerFileError(f"{path} is not a regular file, so it is not read as {what}.")
    if info.st_size > max_bytes:
        raise ServerFileError(
            f"{path} is {info.st_size / MIB:.1f} MB, over the {max_bytes / MIB:.0f} MB the app reads as {what}. "
            + raise_hint(MAX_TEXT_FILE_ENV)
        )
    return path
