"""The segmentation model: a factory, safe save/load, and inference on scans.

A weights folder is smp's ``save_pretrained`` layout plus what inference needs::

    weights/<name>/config.json          smp architecture (``_model_class``, encoder, ...)
    weights/<name>/model.safetensors    the parameters (safetensors: no pickle is ever loaded)
    weights/<name>/preprocessing.json   :class:`~brainviewer.model.preprocessing.Preprocessing`
    weights/<name>/README.md            the model card

``config.json`` and ``model.safetensors`` are exactly what ``segmentation_models_pytorch.from_pretrained``
(smp 0.6) reads, so ``smp.from_pretrained("weights/<name>")`` or ``smp.from_pretrained("user/model")`` (a
pushed folder) builds the same network as :func:`load_model`, without brainviewer's preprocessing
(tests/model/test_smp_pretrained.py checks both loaders give equal outputs).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from brainviewer.compat import import_smp
from brainviewer.model.gate import slice_mask, split_output, tumour_shown
from brainviewer.model.preprocessing import PREPROCESSING_FILE, Preprocessing, to_input, unletterbox

logger = logging.getLogger(__name__)

#: smp architectures the factory builds (name -> what it is good for).
ARCHITECTURES: dict[str, str] = {
    "Unet": "U-Net (Ronneberger et al. 2015); the default",
    "UnetPlusPlus": "U-Net++ with nested skip connections",
    "FPN": "Feature Pyramid Network",
    "DeepLabV3Plus": "DeepLab v3+ with atrous convolutions",
    "Linknet": "LinkNet, light decoder",
    "MAnet": "Multi-scale attention net",
}
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class WeightsError(ValueError):
    """A weights folder is missing, incomplete or corrupt. The message says how to fix it."""


def build_model(
    arch: str = "Unet",
    encoder: str = "resnet18",
    in_channels: int = 3,
    classes: int = 1,
    **kwargs: object,
) -> nn.Module:
    """Build an untrained smp model (encoder weights are never downloaded).

    Args:
        arch: one of :data:`ARCHITECTURES`.
        encoder: an smp encoder name, e.g. ``resnet18``, ``resnet34``, ``efficientnet-b0``.
        in_channels: 1 or 3.
        classes: output channels (1 for binary tumour segmentation).
        **kwargs: passed to the smp architecture (e.g. ``decoder_channels``).

    Returns:
        The model; its forward maps ``(N, in_channels, S, S)`` float32 to ``(N, classes, S, S)`` logits.

    Raises:
        ValueError: unknown architecture or encoder (the message lists valid ones).
    """
    smp = import_smp()
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}. Choose one of: {', '.join(ARCHITECTURES)}.")
    encoders = smp.encoders.get_encoder_names()
    if encoder not in encoders and not encoder.startswith("tu-"):
        raise ValueError(
            f"Unknown encoder {encoder!r}. Try one of: {', '.join(_similar(encoder, encoders))} "
            "(all names: smp.encoders.get_encoder_names(), or tu-<timm model name>)."
        )
    kwargs.pop("encoder_weights", None)
    try:
        return smp.create_model(
            arch, encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=classes, **kwargs
        )
    except RuntimeError as err:  # timm: "Unknown model (...)" for a bad tu- name
        raise ValueError(f"Cannot build encoder {encoder!r}: {err}") from err


def _similar(name: str, choices: list[str], limit: int = 8) -> list[str]:
    """Encoder names close to ``name`` (same family first), else a few common ones."""
    import difflib

    family = name.split("-")[0].rstrip("0123456789").lower()
    close = [c for c in choices if family and c.lower().startswith(family)]
    close += [c for c in difflib.get_close_matches(name, choices, n=limit, cutoff=0.5) if c not in close]
    if len(close) < 3:
        close += [
            c
            for c in ("resnet18", "resnet34", "resnet50", "efficientnet-b0", "mobilenet_v2")
            if c in choices and c not in close
        ]
    return close[:limit]


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _config_for(model: nn.Module) -> dict:
    config = dict(getattr(model, "_hub_mixin_config", None) or {})
    config["_model_class"] = type(model).__name__
    config["encoder_weights"] = None
    return config


def save_weights(
    model: nn.Module,
    folder: str | Path,
    prep: Preprocessing,
    card: str | None = None,
    extra_files: dict[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a complete weights folder atomically.

    The folder is written under a temporary name beside the target and renamed into
    place, so a reader never sees a half-written folder. An existing folder is never
    overwritten unless ``overwrite=True``; then the old one is moved aside first and
    removed only after the new one is in place.

    Args:
        model: an smp model (built by :func:`build_model` or loaded).
        folder: target folder.
        prep: preprocessing to store beside the weights.
        card: model card markdown (``README.md``).
        extra_files: more text files to write (name -> content), e.g. the training config.
        overwrite: replace an existing folder.

    Returns:
        The folder path.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} already exists; choose another name or pass overwrite=True.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    old: Path | None = None
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(_config_for(model), indent=2, sort_keys=True) + "\n")
        prep.save(tmp)
        if card:
            (tmp / "README.md").write_text(card)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{time.time_ns()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        if old is not None and not folder.exists():
            os.replace(old, folder)  # the new folder never arrived: put the old one back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def load_model(folder: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, Preprocessing]:
    """Rebuild a model and its preprocessing from a weights folder (safetensors only).

    Raises:
        WeightsError: missing folder or file, unknown architecture, or mismatched tensors.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(
            f"No weights folder at {folder}. Train a model (python -m brainviewer train) or "
            "point BRAINVIEWER_WEIGHTS at a folder holding config.json and model.safetensors."
        )
    missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / n).is_file()]
    if missing:
        raise WeightsError(f"{folder} is missing {', '.join(missing)}; it is not a complete weights folder.")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{folder / CONFIG_FILE} is not valid JSON ({err}).") from err
    arch = config.pop("_model_class", "Unet")
    encoder = config.pop("encoder_name", None)
    if not encoder:
        raise WeightsError(f"{folder / CONFIG_FILE} does not name an encoder (encoder_name).")
    try:
        model = build_model(arch, encoder, **config)
    except (ValueError, TypeError) as err:
        raise WeightsError(f"{folder / CONFIG_FILE} describes a model that cannot be built: {err}") from err
    try:
        state = load_file(str(folder / WEIGHTS_FILE), device="cpu")
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise WeightsError(f"{folder / WEIGHTS_FILE} is corrupt or does not match config.json: {err}") from err
    if (folder / PREPROCESSING_FILE).is_file():
        try:
            prep = Preprocessing.load(folder)
        except (ValueError, TypeError) as err:
            raise WeightsError(f"{folder / PREPROCESSING_FILE} is invalid: {err}") from err
    else:
        prep = Preprocessing(in_channels=int(config.get("in_channels", 3)))
    model.eval()
    return model.to(map_location), prep


@dataclass
class Segmenter:
    """A loaded model ready for inference on scans of any size.

    Attributes:
        model: the network, in eval mode, on ``device``.
        prep: its preprocessing.
        device: where it runs.
        name: a label for people (the weights folder name).
    """

    model: nn.Module
    prep: Preprocessing
    device: torch.device
    name: str = "model"
    source: str = ""

    @classmethod
    def from_folder(cls, folder: str | Path, device: str | torch.device | None = None) -> Segmenter:
        """Load a weights folder onto ``device`` (default: CUDA if available, else CPU)."""
        device = torch.device(device) if device is not None else default_device()
        model, prep = load_model(folder, map_location=device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return cls(model=model, prep=prep, device=device, name=Path(folder).name, source=str(folder))

    def predict_probs_batch(
        self, images: list[np.ndarray], batch_size: int = 8, levels: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """Tumour probabilities for several scans.

        Args:
            images: scans, each ``(H, W)`` or ``(H, W, 3)`` of any numeric dtype and size.
            batch_size: scans per forward pass.
            levels: a patient's intensity levels (:func:`~brainviewer.model.preprocessing.volume_levels`),
                or ``None`` to normalise each scan on its own
                (see :func:`brainviewer.model.inference.predict_volume_probs`).

        Returns:
            ``probs`` for each scan: ``(H, W)`` float32 in ``[0, 1]`` at the scan's own size.
            With ``prep.tta_flip`` they are the mean over the scan and its left-right mirror.
        """
        return self.predict_slices(images, batch_size, levels)[0]

    def predict_slices(
        self, images: list[np.ndarray], batch_size: int = 8, levels: np.ndarray | None = None
    ) -> tuple[list[np.ndarray], list[float | None]]:
        """Tumour probabilities and tumour-present probabilities for several scans.

        Returns:
            ``(probs, presence)``: ``probs`` as :meth:`predict_probs_batch` gives them, and for each scan the
            classification head's tumour-present probability in ``[0, 1]`` (``None`` for a model without a
            head). With ``prep.tta_flip`` both are means over the scan and its mirror.
        """
        out = self._run(images, batch_size, flip=self.prep.tta_flip, levels=levels)
        return (out[1], out[3]) if self.prep.tta_flip else (out[0], out[2])

    def predict_probs_plain_and_flip(
        self, images: list[np.ndarray], batch_size: int = 8, levels: np.ndarray | None = None
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Both kinds of probabilities from one pass of the scans and their mirrors, whatever
        ``prep.tta_flip`` says: ``(plain, flip-averaged)``, each as :meth:`predict_probs_batch` gives them
        with ``tta_flip`` off and on. Used to choose the post-processing with and without TTA at once."""
        return self._run(images, batch_size, flip=True, levels=levels)[:2]

    @torch.inference_mode()
    def _run(
        self, images: list[np.ndarray], batch_size: int, flip: bool, levels: np.ndarray | None = None
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[float | None], list[float | None]]:
        """``(plain probs, flip-averaged probs, plain presence, flip-averaged presence)``; the averaged lists
        are empty unless ``flip``; presence is ``None`` per scan for a model without a head."""
        plain: list[np.ndarray] = []
        averaged: list[np.ndarray] = []
        presence: list[float | None] = []
        presence_averaged: list[float | None] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            n = len(chunk)
            inputs = [to_input(img, self.prep, levels) for img in chunk]
            batch = torch.from_numpy(np.stack(inputs)).to(self.device)
            if flip:
                batch = torch.cat([batch, batch.flip(-1)])
            if self.device.type == "cuda":
                batch = batch.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    logits, labels = split_output(self.model(batch))
            else:
                logits, labels = split_output(self.model(batch))
            probs_t = torch.sigmoid(logits.float())[:, 0]
            sizes = [img.shape[:2] for img in chunk]
            plain.extend(unletterbox(p, size) for p, size in zip(probs_t[:n].cpu().numpy(), sizes, strict=True))
            present = None if labels is None else torch.sigmoid(labels.float())[:, 0].cpu().numpy()
            presence.extend([None] * n if present is None else [float(v) for v in present[:n]])
            if flip:  # mean of the plain and the mirrored pass, mirrored back
                mean_t = (probs_t[:n] + probs_t[n:].flip(-1)) / 2
                averaged.extend(unletterbox(p, size) for p, size in zip(mean_t.cpu().numpy(), sizes, strict=True))
                both = [None] * n if present is None else [float(v) for v in (present[:n] + present[n:]) / 2]
                presence_averaged.extend(both)
        return plain, averaged, presence, presence_averaged

    def predict_probs(self, image: np.ndarray) -> np.ndarray:
        """Tumour probabilities ``(H, W)`` float32 in ``[0, 1]`` for one scan ``(H, W[, 3])``."""
        return self.predict_probs_batch([image])[0]

    def tumour_shown(self, presence: float | None) -> bool:
        """Whether the tumour-present gate lets a slice with head output ``presence`` show its mask
        (see :mod:`brainviewer.model.gate`); always true for weights without a gate."""
        return tumour_shown(presence, self.prep.tumour_gate)

    def mask_from_probs(
        self, probs: np.ndarray, threshold: float | None = None, presence: float | None = None
    ) -> np.ndarray:
        """Threshold ``probs`` and apply the weights' post-processing: ``(H, W)`` bool. Given the slice's
        tumour-present probability ``presence`` (:meth:`predict_slices`), a slice the gate calls tumour-free
        gets an empty mask."""
        return slice_mask(probs, self.prep, threshold, presence)
