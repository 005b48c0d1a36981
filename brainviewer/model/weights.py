"""Where the app's model comes from: a local weights folder or a Hugging Face Hub repo."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from brainviewer.model.segmenter import Segmenter, WeightsError

logger = logging.getLogger(__name__)

#: Environment variable naming the weights the app and the commands use by default.
WEIGHTS_ENV = "BRAINVIEWER_WEIGHTS"
#: Hub revision (branch, tag or commit) to pin when ``$BRAINVIEWER_WEIGHTS`` is a Hub repo id.
REVISION_ENV = "BRAINVIEWER_WEIGHTS_REVISION"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS_DIR = PROJECT_ROOT / "weights"
DEFAULT_WEIGHTS = "lgg-unet-resnet18"


def weights_root() -> Path:
    """The folder holding weights folders (``weights/`` of the project)."""
    return Path(os.environ.get("BRAINVIEWER_WEIGHTS_DIR", WEIGHTS_DIR))


def list_local_weights(root: Path | None = None) -> list[Path]:
    """Complete weights folders under ``root`` (those with config.json and model.safetensors)."""
    root = root or weights_root()
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and (p / "config.json").is_file()
        and (p / "model.safetensors").is_file()
    )


def default_weights_spec() -> str:
    """The weights to use when none is named: ``$BRAINVIEWER_WEIGHTS``, else the active
    model recorded in ``weights/ACTIVE``, else ``weights/lgg-unet-resnet18``."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return env
    active = weights_root() / "ACTIVE"
    if active.is_file():
        name = active.read_text().strip()
        if name and (weights_root() / name).is_dir():
            return str(weights_root() / name)
    return str(weights_root() / DEFAULT_WEIGHTS)


def resolve_weights_folder(spec: str | None, revision: str | None = None) -> Path:
    """A local folder for ``spec``: a path, a name under ``weights/``, or a Hub repo id."""
    spec = spec or default_weights_spec()
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    local = weights_root() / spec
    if local.is_dir():
        return local
    if _looks_like_repo_id(spec) and not path.exists():
        from brainviewer.model.hub import download_weights

        return download_weights(spec, revision=revision or os.environ.get(REVISION_ENV) or None)
    raise WeightsError(
        f"No weights at {spec}. Train a model (python -m brainviewer train), or give a folder "
        "with config.json and model.safetensors, or a Hugging Face repo id like user/model."
    )


def _looks_like_repo_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~"))


def resolve_segmenter(spec: str | None, device: str | None = None, revision: str | None = None) -> Segmenter:
    """Load the model for ``spec`` (see :func:`resolve_weights_folder`) on ``device``."""
    folder = resolve_weights_folder(spec, revision)
    segmenter = Segmenter.from_folder(folder, device=torch.device(device) if device else None)
    spec = spec or default_weights_spec()
    if _looks_like_repo_id(spec) and not Path(spec).expanduser().exists() and not (weights_root() / spec).is_dir():
        segmenter.name = spec  # a Hub model: its repo id, not the cache folder's commit hash
    return segmenter
