"""The app's model: the active weights, promoting a run's best weights, and weights to start a run from.

:func:`promote_run` copies a run's ``best/`` weights to ``weights/<name>`` (never
overwriting: a suffix is added) and records that folder in ``weights/ACTIVE``, which
:func:`brainviewer.model.weights.default_weights_spec` reads (``$BRAINVIEWER_WEIGHTS`` still
overrides it). Both steps are atomic renames: a failure leaves ``ACTIVE`` and every existing
folder as they were, and the previous model stays available under its own name.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from brainviewer.files import pid_exists, read_json_object, write_atomic
from brainviewer.model.weights import list_local_weights, weights_root
from brainviewer.runs.folders import (
    MODEL_CONFIG_FILE,
    STALE_TEMP_AGE_S,
    complete_weights,
    first_time_in_process,
    flock,
    remove_stale_temporaries,
    validate_name,
)
from brainviewer.runs.layout import ACTIVE_FILE, BEST, CONFIG_FILE, PROMOTION_FILE, STATUS_FILE
from brainviewer.runs.read import list_runs

logger = logging.getLogger(__name__)


def active_weights(weights_dir: str | Path | None = None) -> str | None:
    """The folder name recorded in ``weights/ACTIVE`` when it names an existing folder, else None.

    This is what :func:`brainviewer.model.weights.default_weights_spec` uses unless ``$BRAINVIEWER_WEIGHTS`` is set.
    """
    weights_dir = Path(weights_dir) if weights_dir is not None else weights_root()
    try:
        name = (weights_dir / ACTIVE_FILE).read_text().strip()
    except OSError:
        return None
    return name if name and (weights_dir / name).is_dir() else None


def set_active(name: str, weights_dir: str | Path | None = None) -> Path:
    """Record ``weights/<name>`` as the app's model (``ACTIVE`` rewritten atomically); returns that folder.

    Raises:
        ValueError: no complete weights folder of that name.
    """
    weights_dir = Path(weights_dir) if weights_dir is not None else weights_root()
    folder = weights_dir / validate_name(name, "weights")
    if not complete_weights(folder):
        raise ValueError(f"{folder} is not a complete weights folder (config.json and model.safetensors).")
    write_atomic(weights_dir / ACTIVE_FILE, name + "\n")
    logger.info("active weights: %s", folder)
    return folder


def _free_folder(parent: Path, name: str) -> Path:
    for n in range(1, 1000):
        candidate = parent / (name if n == 1 else f"{name}-{n}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free folder name like {name} in {parent}")


def promoted_name(run_dir: str | Path, when: float | None = None) -> str:
    """The default name of a run's promoted weights: the base weights' folder name without its architecture
    suffix (``-unet-resnet18``, from the run's ``arch`` and ``encoder``; the sidebar says the architecture),
    ``scratch`` for a run trained from scratch, and the promotion date: ``figshare-ft-nov29``. It fits the
    sidebar's selector with its ``(default)`` tag, unlike a dated run name (``figshare-20261129-114754-ab12``)
    or ``figshare-unet-resnet18-ft-nov29 (default)``, which needed 254 px of the selector's 206 in Chromium.

    Args:
        run_dir: the run folder (its ``config.json`` names the base weights, arch and encoder).
        when: the promotion time (``time.time()`` by default).
    """
    config = read_json_object(Path(run_dir) / CONFIG_FILE)
    base = str(config.get("init_weights") or "").rstrip("/")
    stem = Path(base).name if base else "scratch"
    suffix = f"-{config.get('arch', '')}-{config.get('encoder', '')}".lower()
    if suffix != "--" and stem.lower().endswith(suffix) and len(stem) > len(suffix):
        stem = stem[: -len(suffix)]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("._-") or "weights"
    date = time.strftime("%b%d", time.localtime(time.time() if when is None else when)).lower()
    return f"{stem[:60]}-ft-{date}"


def promote_run(
    run_dir: str | Path, name: str | None = None, weights_dir: str | Path | None = None, activate: bool = True
) -> Path:
    """Copy a run's ``best/`` weights to ``weights/<name>`` and make them the active model.

    The copy is written under a hidden temporary name and renamed into place; then ``ACTIVE``
    is rewritten through a temporary file and a rename. A failure at any point removes what
    this call made and leaves ``ACTIVE`` and all existing folders as they were. An existing
    folder is never overwritten: ``-2``, ``-3``, ... is added to the name.

    Args:
        run_dir: the run.
        name: folder name under ``weights_dir`` (default: :func:`promoted_name`, base weights + date).
        weights_dir: the weights folder (default :func:`brainviewer.model.weights.weights_root`).
        activate: also record the new folder in ``ACTIVE``.

    Returns:
        The new weights folder.

    Raises:
        ValueError: the run has no complete ``best/`` yet, or the name is not allowed.
    """
    run_dir = Path(run_dir)
    best = run_dir / BEST
    if not complete_weights(best):
        raise ValueError(f"run {run_dir.name} has no best weights yet; they are saved after its first validation.")
    weights_dir = Path(weights_dir) if weights_dir is not None else weights_root()
    weights_dir.mkdir(parents=True, exist_ok=True)
    name = validate_name(name or promoted_name(run_dir), "weights")
    with flock(weights_dir):
        target = _free_folder(weights_dir, name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.promote-{os.getpid()}-", dir=weights_dir))
        try:
            for _attempt in range(3):  # the run may replace best/ while we copy: copy again
                inode = best.stat().st_ino
                shutil.copytree(best, tmp, dirs_exist_ok=True)
                if best.stat().st_ino == inode:
                    break
                shutil.rmtree(tmp)
                tmp.mkdir()
            info = read_json_object(run_dir / STATUS_FILE)
            provenance = {
                "run": run_dir.name,
                "run_dir": str(run_dir.resolve()),
                "promoted": time.time(),
                "run_state": info.get("state"),
                "base_weights": read_json_object(run_dir / CONFIG_FILE).get("init_weights") or "from scratch",
            }
            (tmp / PROMOTION_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if activate:
            try:
                set_active(target.name, weights_dir)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)  # made by this call a moment ago
                raise
    logger.info("promoted %s to %s", run_dir.name, target)
    return target


_PROMOTE_TMP_RE = re.compile(r"^\..+\.promote-(?:(\d+)-)?[^-]*$")


def clean_stale_promotions(
    weights_dir: str | Path | None = None, min_age_s: float = STALE_TEMP_AGE_S, now: float | None = None
) -> list[Path]:
    """Remove what killed promotions left in the weights folder: hidden partial copies
    (``.<name>.promote-<pid>-<random>``) and ``.ACTIVE.<random>.tmp`` files.

    A partial copy is removed only while no promotion holds the weights folder's lock, and only when the
    process that made it is gone (or, for a copy whose name has no process id, when it is ``min_age_s``
    old); a temporary file once it is ``min_age_s`` old. Complete weights folders are never touched.

    Returns:
        The paths removed.
    """
    weights_dir = Path(weights_dir) if weights_dir is not None else weights_root()
    if not weights_dir.is_dir():
        return []
    now = time.time() if now is None else now
    removed = remove_stale_temporaries(weights_dir, min_age_s, now)
    fd = os.open(weights_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a promotion is at work: leave its copy alone
            return removed
        for path in weights_dir.glob(".*.promote-*"):
            match = _PROMOTE_TMP_RE.match(path.name)
            try:
                if match is None or path.is_symlink() or not path.is_dir():
                    continue
                if match.group(1) is not None:
                    stale = int(match.group(1)) != os.getpid() and not pid_exists(int(match.group(1)))
                else:
                    stale = now - path.stat().st_mtime >= min_age_s
            except OSError:
                continue
            if stale:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    finally:
        os.close(fd)
    for path in removed:
        logger.info("removed the leftover of a killed promotion %s", path)
    return removed


def clean_stale_promotions_once(weights_dir: str | Path | None = None) -> list[Path]:
    """:func:`clean_stale_promotions` the first time it is asked for a weights folder in this process."""
    weights_dir = Path(weights_dir) if weights_dir is not None else weights_root()
    if not weights_dir.is_dir() or not first_time_in_process("weights", weights_dir):
        return []
    try:
        return clean_stale_promotions(weights_dir)
    except OSError as err:
        logger.warning("could not clean %s: %s", weights_dir, err)
        return []


def weights_summary(folder: str | Path) -> dict:
    """``input_size``, ``in_channels``, ``arch`` and ``encoder`` of a weights folder (from its JSON files).

    Raises:
        ValueError: the files are missing or unreadable.
    """
    from brainviewer.model.preprocessing import PREPROCESSING_FILE, Preprocessing

    folder = Path(folder)
    try:
        model_config = json.loads((folder / MODEL_CONFIG_FILE).read_text())
        prep = Preprocessing.load(folder) if (folder / PREPROCESSING_FILE).is_file() else Preprocessing()
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"cannot read the model description in {folder}: {err}") from err
    return {
        "input_size": prep.input_size,
        "in_channels": prep.in_channels,
        "arch": str(model_config.get("_model_class", "Unet")),
        "encoder": str(model_config.get("encoder_name", "")),
    }


def base_weight_choices(runs_dir: str | Path | None = None, weights_dir: str | Path | None = None) -> dict[str, str]:
    """Weights a run can start from: label -> folder path.

    The app's current default model first, then every complete folder under ``weights/``,
    then the ``best/`` of every run that has one.
    """
    from brainviewer.model.weights import default_weights_spec

    clean_stale_promotions_once(Path(weights_dir) if weights_dir is not None else None)
    choices: dict[str, str] = {}
    default = Path(default_weights_spec())
    if complete_weights(default):
        choices[f"current model ({default.name})"] = str(default.resolve())
    for folder in list_local_weights(Path(weights_dir) if weights_dir is not None else None):
        choices.setdefault(f"weights/{folder.name}", str(folder.resolve()))
    for run in list_runs(runs_dir):
        if run.has_best:
            choices.setdefault(f"run {run.name} (best)", str(run.best_dir.resolve()))
    return choices
