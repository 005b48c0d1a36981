"""Turning a scan into model input and model output back into a scan-sized map.

The model sees a fixed ``input_size x input_size`` square. A scan of any size is
letterboxed (zero-padded to a square, then resized), so its aspect ratio is kept, and
the probabilities are mapped back to the scan's own ``(H, W)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np

PREPROCESSING_FILE = "preprocessing.json"


LGG_CHANNEL_NAMES = ["pre-contrast", "FLAIR", "post-contrast"]
"""The three sequences of an LGG (kaggle_3m) slice, in its channel order."""
GRAY_CHANNEL_NAME = "grayscale"
"""``channel_names`` entry of a model trained on grayscale scans (repeated into each input channel)."""
INTENSITY_NORMS = ("none", "percentile", "volume_percentile")
"""Values of ``Preprocessing.intensity_norm``."""
PLANES = ("axial", "coronal", "sagittal")
"""The planes a slice can be acquired in (``Preprocessing.planes``)."""
HEAD_LEVEL = 0.02
"""Unit-range intensity above which a pixel counts as head (not background) for the percentile."""
MAX_INPUT_SIZE = 1024
"""Largest ``input_size`` accepted: the network's activations grow with its square (20000 would need gigabytes
for one slice), and no MRI slice needs more than 1024 x 1024."""


@dataclass
class Preprocessing:
    """How a scan is prepared for a model, and how its output is read. Saved beside
    the weights as ``preprocessing.json``."""

    input_size: int = 256
    """Side of the square the network sees, in pixels."""
    in_channels: int = 3
    """Channels the network takes: 3 for LGG (pre-contrast, FLAIR, post-contrast), 1 for gray."""
    channel_names: list[str] = field(default_factory=lambda: list(LGG_CHANNEL_NAMES))
    """What each input channel holds: the LGG sequences, or ``"grayscale"`` in every channel for a model
    trained on grayscale scans (set by the trainer from its data; the app warns on the other kind of scan)."""
    gray_channel: int = 1
    """For a 1-channel model given a 3-channel scan: which channel to use (-1 = their mean)."""
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    """Per-channel mean of unit-range training images, subtracted before the network."""
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    """Per-channel standard deviation of unit-range training images."""
    threshold: float = 0.5
    """Default probability cut for the predicted mask (chosen on validation data)."""
    min_component_px: int = 0
    """Post-processing: drop predicted components smaller than this many pixels (0 = keep all)."""
    keep_largest: bool = False
    """Post-processing: keep only the largest predicted component."""
    volume_keep_largest: bool = False
    """Post-processing of a patient's stacked slices: keep only the largest 3-D connected component.
    Applies wherever a whole volume is predicted (evaluation, the Patients page), not to one uploaded slice."""
    tta_flip: bool = False
    """Test-time augmentation: average the probabilities of the scan and of its left-right mirror
    image (two forward passes; chosen on validation data)."""
    intensity_norm: str = "none"
    """Intensity normalisation before the network, which makes scans of other scanners and windowings look
    alike: ``none`` (unit range only, as weights saved before this field), ``percentile`` (each channel of
    each image scaled so that the ``norm_percentile``-th percentile of its head pixels lands on
    ``norm_target``, then clipped to [0, 1]) or ``volume_percentile`` (the same, with the percentile taken
    over all slices of a patient where a whole volume is predicted; a slice seen alone is not rescaled,
    since one slice's percentile is a biased estimate of its patient's: with the previous LGG default model
    it cost 0.06 Dice on its validation patients)."""
    norm_percentile: float = 99.0
    """With a percentile ``intensity_norm``: the percentile of head pixels that is matched, in (50, 100]."""
    norm_target: list[float] = field(default_factory=lambda: [0.7])
    """With a percentile ``intensity_norm``: the unit-range value that percentile is moved to, in (0, 1];
    one value for every channel or one per channel."""
    tumour_gate: float | None = None
    """Tumour-present gate (:mod:`brainviewer.model.gate`): a slice predicted alone shows its mask only when the
    model's classification head gives it a tumour-present probability of at least this, in ``[0, 1)``; chosen
    on validation patients for a target false-positive rate. ``None`` (weights without a head) never gates.
    Whole patients (``--volume``, evaluation, the Patients page) are not gated: their 3-D step does that."""
    planes: list[str] | None = None
    """The planes (:data:`PLANES`) of the slices the weights were trained on, when known: the app names them and
    says when a series was acquired in another. ``None``: not recorded, and the app says nothing about planes."""

    def __post_init__(self) -> None:
        for name in ("input_size", "in_channels", "gray_channel", "min_component_px"):
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # 256.0 from a hand-edited JSON file
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
            setattr(self, name, int(value))
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.input_size < 32 or self.input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32 and >= 32, got {self.input_size}")
        if self.input_size > MAX_INPUT_SIZE:
            raise ValueError(
                f"input_size must be at most {MAX_INPUT_SIZE} (MAX_INPUT_SIZE, the memory limit of one model input), "
                f"got {self.input_size}. Fix input_size in preprocessing.json (the weights were trained at one size, "
                "usually 256)."
            )
        if self.gray_channel not in (-1, 0, 1, 2):
            raise ValueError(f"gray_channel must be 0, 1 or 2 (or -1 for the channel mean), got {self.gray_channel}")
        if self.min_component_px < 0:
            raise ValueError(f"min_component_px must be >= 0, got {self.min_component_px}")
        for name in ("mean", "std"):
            values = list(getattr(self, name))
            if len(values) == 1 or (self.in_channels == 1 and len(values) == 3 and len(set(values)) == 1):
                values = values[:1] * self.in_channels  # one value for every channel (the 3-value defaults too)
            if len(values) != self.in_channels:
                raise ValueError(f"{name} needs {self.in_channels} values, got {len(values)}")
            setattr(self, name, [float(v) for v in values])
        if not all(np.isfinite(self.mean)):
            raise ValueError(f"mean values must be finite numbers, got {self.mean}")
        if not all(np.isfinite(s) and s > 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")
        for name in ("keep_largest", "volume_keep_largest", "tta_flip"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
            setattr(self, name, bool(getattr(self, name)))
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.intensity_norm not in INTENSITY_NORMS:
            raise ValueError(f"intensity_norm must be one of {', '.join(INTENSITY_NORMS)}; got {self.intensity_norm!r}")
        value = self.norm_percentile
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 50.0 < value <= 100.0:
            raise ValueError(f"norm_percentile must be a number in (50, 100], got {value!r}")
        self.norm_percentile = float(value)
        targets = self.norm_target if isinstance(self.norm_target, (list, tuple)) else [self.norm_target]
        if len(targets) == 1:
            targets = list(targets) * self.in_channels
        if len(targets) != self.in_channels or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and 0.0 < t <= 1.0 for t in targets
        ):
            raise ValueError(
                f"norm_target must be one number in (0, 1] or {self.in_channels} of them, got {self.norm_target!r}"
            )
        self.norm_target = [float(t) for t in targets]
        gate = self.tumour_gate
        if gate is not None:
            if isinstance(gate, bool) or not isinstance(gate, (int, float)) or not 0.0 <= gate < 1.0:
                raise ValueError(f"tumour_gate must be a number in [0, 1) or null (no gate), got {gate!r}")
            self.tumour_gate = float(gate)
        if self.planes is not None:
            planes = [self.planes] if isinstance(self.planes, str) else list(self.planes)
            if not planes or any(plane not in PLANES for plane in planes):
                raise ValueError(f"planes must list some of {', '.join(PLANES)} (or be null), got {self.planes!r}")
            self.planes = [plane for plane in PLANES if plane in planes]

    def save(self, folder: str | Path) -> Path:
        """Write ``<folder>/preprocessing.json`` (the folder must exist); returns its path."""
        path = Path(folder) / PREPROCESSING_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Preprocessing:
        """Read ``<folder>/preprocessing.json``; unknown keys are ignored, missing ones take defaults.

        Raises:
            FileNotFoundError: the folder has no preprocessing.json.
            ValueError: the file is not valid JSON or holds invalid values.
        """
        path = Path(folder) / PREPROCESSING_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}); restore it from the model's source.") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object of settings, not {type(data).__name__}.")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from err


def to_unit_range(image: np.ndarray) -> np.ndarray:
    """Scale intensities to ``[0, 1]`` float32.

    ``uint8`` is divided by 255 (the LGG convention). Anything else (16-bit, float) is
    divided by its 99.8th percentile and clipped, which maps scanner units onto the same
    range without letting a few bright pixels squash the rest.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``, any numeric dtype.

    Returns:
        float32 array of the same shape with values in ``[0, 1]``.
    """
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    values = image.astype(np.float32)
    lo = min(float(values.min()), 0.0)
    values = values - lo
    hi = float(np.percentile(values, 99.8)) if values.size else 0.0
    if hi <= 0:
        hi = float(values.max()) or 1.0
    return np.clip(values / hi, 0.0, 1.0)


def match_channels(image: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Give a ``(H, W)`` or ``(H, W, 3)`` image the model's channel count: ``(H, W, C)``.

    A grayscale scan is repeated into every channel for a 3-channel model (the LGG
    dataset itself repeats FLAIR where a sequence is missing); a 3-channel scan given to
    a 1-channel model uses ``prep.gray_channel``.
    """
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == prep.in_channels:
        return image
    if prep.in_channels == 3:
        return np.repeat(image[..., :1], 3, axis=2)
    if prep.gray_channel < 0:
        return image.mean(axis=2, keepdims=True)
    return image[..., prep.gray_channel : prep.gray_channel + 1]


def letterbox(array: np.ndarray, size: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Zero-pad ``(H, W[, C])`` to a square (bottom/right) and resize it to ``size``."""
    height, width = array.shape[:2]
    side = max(height, width)
    if height != width:
        pad = [(0, side - height), (0, side - width)] + [(0, 0)] * (array.ndim - 2)
        array = np.pad(array, pad)
    if side != size:
        channels = array.shape[2] if array.ndim == 3 else 0
        array = cv2.resize(array, (size, size), interpolation=interpolation)
        if channels == 1:
            array = array[..., None]
    return array


def unletterbox(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Invert :func:`letterbox` for a ``(S, S)`` probability map: back to ``shape`` (H, W)."""
    height, width = shape
    side = max(height, width)
    if probs.shape[0] != side:
        probs = cv2.resize(probs, (side, side), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(probs[:height, :width])


def _head_levels(units: Sequence[np.ndarray], percentile: float) -> np.ndarray:
    """Per channel, the ``percentile``-th percentile of the head pixels (above :data:`HEAD_LEVEL`) of
    unit-range ``(H, W, C)`` images taken together; 0 for a channel without head pixels. ``(C,)`` float32."""
    channels = units[0].shape[2]
    levels = np.zeros(channels, dtype=np.float32)
    for channel in range(channels):
        head = np.concatenate([u[..., channel][u[..., channel] > HEAD_LEVEL] for u in units])
        levels[channel] = float(np.percentile(head, percentile)) if head.size else 0.0
    return levels


def volume_levels(images: Sequence[np.ndarray], prep: Preprocessing) -> np.ndarray | None:
    """The intensity levels of one patient's slices, for :func:`prepare_unit`'s ``levels``.

    Args:
        images: the patient's scans, each ``(H, W)`` or ``(H, W, 3)``, any numeric dtype.
        prep: the model's preprocessing.

    Returns:
        ``(C,)`` float32 per-channel percentiles over all slices with ``volume_percentile``; ``None``
        otherwise (each image is then normalised on its own, or not at all).
    """
    if getattr(prep, "intensity_norm", "none") != "volume_percentile" or not len(images):
        return None
    return _head_levels([match_channels(to_unit_range(image), prep) for image in images], prep.norm_percentile)


def normalise_intensity(unit: np.ndarray, prep: Preprocessing, levels: np.ndarray | None = None) -> np.ndarray:
    """Apply ``prep.intensity_norm`` to a unit-range ``(H, W, C)`` float32 image; same shape, in ``[0, 1]``.

    A percentile norm scales each channel so its level (the ``prep.norm_percentile``-th percentile of the
    head pixels, above :data:`HEAD_LEVEL`) becomes ``prep.norm_target``; a channel without head pixels is
    left as is.

    Args:
        unit: the image.
        prep: the model's preprocessing.
        levels: ``(C,)`` levels from :func:`volume_levels` (the patient's); ``None``: this image's own
            with ``percentile``, and no rescaling at all with ``volume_percentile``.
    """
    if prep.intensity_norm == "none" or (levels is None and prep.intensity_norm == "volume_percentile"):
        return unit  # a slice seen alone: its own percentile is a biased estimate of its patient's
    if levels is None:
        levels = _head_levels([unit], prep.norm_percentile)
    out = np.empty_like(unit, dtype=np.float32)
    for channel in range(unit.shape[2]):
        level = float(levels[channel])
        scale = prep.norm_target[channel] / level if level > HEAD_LEVEL else 1.0
        out[..., channel] = np.clip(unit[..., channel] * scale, 0.0, 1.0)
    return out


def prepare_unit(image: np.ndarray, prep: Preprocessing, levels: np.ndarray | None = None) -> np.ndarray:
    """Scan -> unit-range, intensity-normalised, model-sized, model-channel image ``(S, S, C)`` float32
    (no mean/std yet). Training, the app, ``predict`` and ONNX all go through this one function;
    ``levels`` as :func:`normalise_intensity` takes them."""
    unit = normalise_intensity(match_channels(to_unit_range(image), prep), prep, levels)
    return letterbox(unit, prep.input_size)


def normalise(unit: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """``(S, S, C)`` unit-range image -> ``(C, S, S)`` float32 network input."""
    mean = np.asarray(prep.mean, dtype=np.float32)
    std = np.asarray(prep.std, dtype=np.float32)
    return np.ascontiguousarray(((unit - mean) / std).transpose(2, 0, 1), dtype=np.float32)


def to_input(image: np.ndarray, prep: Preprocessing, levels: np.ndarray | None = None) -> np.ndarray:
    """Scan ``(H, W[, 3])`` any dtype -> network input ``(C, S, S)`` float32 (``levels``: a patient's,
    from :func:`volume_levels`)."""
    return normalise(prepare_unit(image, prep, levels), prep)


def trained_on_grayscale(channel_names: Sequence[str]) -> bool:
    """Whether weights with these ``Preprocessing.channel_names`` were trained on grayscale scans
    (every channel named :data:`GRAY_CHANNEL_NAME`)."""
    return bool(channel_names) and all(name == GRAY_CHANNEL_NAME for name in channel_names)


def is_grayscale(image: np.ndarray) -> bool:
    """Whether a scan ``(H, W)`` or ``(H, W, 3)`` is grayscale: 2-D, or three equal channels."""
    image = np.asarray(image)
    return image.ndim == 2 or bool(
        np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    )
