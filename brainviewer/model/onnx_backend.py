"""Run a weights folder with ONNX Runtime: export, a Segmenter look-alike, and a check against PyTorch.

The exported graph maps ``image`` ``(N, C, S, S)`` float32 (preprocessed, see
:func:`brainviewer.model.preprocessing.to_input`) to ``logits`` ``(N, 1, S, S)`` float32, with a dynamic batch
dimension ``N`` and the fixed ``S = prep.input_size``; a model with a tumour-present head
(:mod:`brainviewer.model.gate`) has a second output ``tumour_logit`` ``(N, 1)``. The weights folder's
``preprocessing.json`` is stored in the ONNX model's metadata (key :data:`PREP_METADATA_KEY`), so a ``.onnx`` file
is self-contained.

Needs ``onnx`` and ``onnxruntime`` (``pip install onnx onnxruntime``, or ``onnxruntime-gpu`` for CUDA);
the default exporter (``dynamo=True``, torch.export based) also needs ``onnxscript``. Without
``onnxscript`` the TorchScript exporter (deprecated in torch 2.9+, still present in 2.13) is used.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from brainviewer.model.gate import slice_mask, split_output, tumour_shown
from brainviewer.model.preprocessing import PREPROCESSING_FILE, Preprocessing, to_input, unletterbox

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
PRESENCE_NAME = "tumour_logit"
#: ONNX opset of the export (both exporters support it; onnxruntime >= 1.14 runs it).
DEFAULT_OPSET = 18
#: Metadata key holding the preprocessing JSON inside the .onnx file.
PREP_METADATA_KEY = "brainviewer.model.preprocessing"
SOURCE_METADATA_KEY = "brainviewer.source"


def _require(module: str, purpose: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"{purpose} needs the '{module}' package: pip install {module.replace('_', '-')}")


def have_onnxruntime() -> bool:
    """Whether ONNX Runtime is installed (the ONNX backend is optional)."""
    return importlib.util.find_spec("onnxruntime") is not None


def export_onnx(
    weights_folder: str | Path,
    out_path: str | Path,
    opset: int = DEFAULT_OPSET,
    dynamo: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a weights folder to a single ``.onnx`` file with a dynamic batch dimension.

    Args:
        weights_folder: a complete weights folder (see :mod:`brainviewer.model.segmenter`).
        out_path: the ``.onnx`` file to write (weights inside the file, no external data).
        opset: ONNX opset version.
        dynamo: ``True`` for the torch.export-based exporter (needs ``onnxscript``), ``False`` for the
            TorchScript one; ``None`` picks dynamo when ``onnxscript`` is installed.
        overwrite: replace an existing file (otherwise an existing file is never touched).

    Returns:
        ``out_path``. The file is written beside it under a temporary name and renamed into place.

    Raises:
        FileExistsError: ``out_path`` exists and ``overwrite`` is False.
        ImportError: ``onnx`` (or, with ``dynamo=True``, ``onnxscript``) is not installed.
        WeightsError: the weights folder cannot be loaded.
    """
    import torch

    from brainviewer.model.gate import has_head
    from brainviewer.model.segmenter import load_model

    _require("onnx", "ONNX export")
    if dynamo is None:
        dynamo = importlib.util.find_spec("onnxscript") is not None
    elif dynamo:
        _require("onnxscript", "The dynamo ONNX exporter")
    import onnx

    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} already exists; choose another --out or pass overwrite=True.")
    model, prep = load_model(weights_folder, map_location="cpu")
    model.eval()
    outputs = [OUTPUT_NAME, PRESENCE_NAME] if has_head(model) else [OUTPUT_NAME]
    example = torch.zeros(2, prep.in_channels, prep.input_size, prep.input_size)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter deprecation / tracer chatter
            if dynamo:
                batch = torch.export.Dim("batch", min=1, max=1024)
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    dynamo=True,
                    input_names=[INPUT_NAME],
                    output_names=outputs,
                    dynamic_shapes=({0: batch},),
                    opset_version=opset,
                    external_data=False,
                    verbose=False,
                )
            else:
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    input_names=[INPUT_NAME],
                    output_names=outputs,
                    dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
                    opset_version=opset,
                )
        proto = onnx.load(str(tmp))
        metadata = {p.key: p.value for p in proto.metadata_props}
        metadata[PREP_METADATA_KEY] = json.dumps(asdict(prep))
        metadata[SOURCE_METADATA_KEY] = str(weights_folder)
        del proto.metadata_props[:]
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(tmp))
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info(
        "exported %s to %s (opset %d, %s exporter)",
        weights_folder,
        out_path,
        opset,
        "dynamo" if dynamo else "torchscript",
    )
    return out_path


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """Overflow-free logistic function, float32."""
    return (0.5 * (1.0 + np.tanh(0.5 * logits.astype(np.float32)))).astype(np.float32)


def default_providers() -> list[str]:
    """ONNX Runtime execution providers to use: CUDA first when installed (``onnxruntime-gpu``), then CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or available


@dataclass
class OnnxSegmenter:
    """An exported model run by ONNX Runtime, with :class:`brainviewer.model.segmenter.Segmenter`'s inference API.

    Attributes:
        session: the ``onnxruntime.InferenceSession``.
        prep: the preprocessing (from the file's metadata, or a ``preprocessing.json`` beside it).
        name: a label for people (the file name without ``.onnx``).
        source: the ``.onnx`` path.
    """

    session: object
    prep: Preprocessing
    name: str = "model"
    source: str = ""
    providers: list[str] = field(default_factory=list)

    @classmethod
    def from_file(
        cls,
        onnx_path: str | Path,
        prep: Preprocessing | None = None,
        providers: list[str] | None = None,
        threads: int | None = None,
    ) -> OnnxSegmenter:
        """Open an exported ``.onnx`` file.

        Args:
            onnx_path: written by :func:`export_onnx` (or any graph with the same input/output).
            prep: preprocessing to use; default: the file's metadata, else ``preprocessing.json`` beside it,
                else :class:`Preprocessing` defaults.
            providers: ONNX Runtime execution providers (default :func:`default_providers`).
            threads: CPU threads for one inference (default: ONNX Runtime's choice, all physical cores).

        Raises:
            ImportError: onnxruntime is not installed.
            FileNotFoundError: no file at ``onnx_path``.
        """
        _require("onnxruntime", "The ONNX backend")
        import onnxruntime as ort

        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise FileNotFoundError(f"No ONNX model at {onnx_path}; create one with python -m brainviewer export-onnx.")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), options, providers=providers or default_providers())
        if prep is None:
            meta = session.get_modelmeta().custom_metadata_map
            if PREP_METADATA_KEY in meta:
                prep = Preprocessing(**json.loads(meta[PREP_METADATA_KEY]))
            elif (onnx_path.parent / PREPROCESSING_FILE).is_file():
                prep = Preprocessing.load(onnx_path.parent)
            else:
                logger.warning("%s carries no preprocessing; using defaults", onnx_path)
                prep = Preprocessing()
        return cls(
            session=session,
            prep=prep,
            name=onnx_path.stem,
            source=str(onnx_path),
            providers=list(session.get_providers()),
        )

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw network output ``(N, 1, S, S)`` float32 for a preprocessed ``(N, C, S, S)`` float32 batch."""
        return self.outputs(batch)[0]

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(mask logits (N, 1, S, S), tumour-present logits (N, 1) or None)`` float32 for a preprocessed
        batch; the second is ``None`` for a file exported from weights without a head."""
        names = [o.name for o in self.session.get_outputs()]
        wanted = [OUTPUT_NAME, PRESENCE_NAME] if PRESENCE_NAME in names else [OUTPUT_NAME]
        got = self.session.run(wanted, {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})
        return got[0], (got[1] if len(got) > 1 else None)

    def predict_probs_batch(
        self, images: list[np.ndarray], batch_size: int = 8, levels: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """Tumour probabilities for several scans.

        Args:
            images: scans, each ``(H, W)`` or ``(H, W, 3)`` of any numeric dtype and size.
            batch_size: scans per run.
            levels: a patient's intensity levels, as :meth:`Segmenter.predict_probs_batch` takes them.

        Returns:
            ``probs`` for each scan: ``(H, W)`` float32 in ``[0, 1]`` at the scan's own size (with
            ``prep.tta_flip``, the mean over the scan and its left-right mirror).
        """
        return self.predict_slices(images, batch_size, levels)[0]

    def predict_slices(
        self, images: list[np.ndarray], batch_size: int = 8, levels: np.ndarray | None = None
    ) -> tuple[list[np.ndarray], list[float | None]]:
        """``(probs, tumour-present probabilities)``, as :meth:`Segmenter.predict_slices` gives them."""
        results: list[np.ndarray] = []
        presence: list[float | None] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            n = len(chunk)
            batch = np.stack([to_input(image, self.prep, levels) for image in chunk])
            if self.prep.tta_flip:  # as Segmenter: the mean of the scan's and its mirror's probabilities
                logits, labels = self.outputs(np.concatenate([batch, batch[..., ::-1]]))
                both = _sigmoid(logits)[:, 0]
                probs = (both[:n] + both[n:, :, ::-1]) / 2
                both_present = None if labels is None else _sigmoid(labels)[:, 0]
                present = None if both_present is None else (both_present[:n] + both_present[n:]) / 2
            else:
                logits, labels = self.outputs(batch)
                probs = _sigmoid(logits)[:, 0]
                present = None if labels is None else _sigmoid(labels)[:, 0]
            results.extend(unletterbox(p, image.shape[:2]) for p, image in zip(probs, chunk, strict=True))
            presence.extend([None] * n if present is None else [float(v) for v in present])
        return results, presence

    def predict_probs(self, image: np.ndarray) -> np.ndarray:
        """Tumour probabilities ``(H, W)`` float32 in ``[0, 1]`` for one scan ``(H, W[, 3])``."""
        return self.predict_probs_batch([image])[0]

    def tumour_shown(self, presence: float | None) -> bool:
        """As :meth:`Segmenter.tumour_shown`."""
        return tumour_shown(presence, self.prep.tumour_gate)

    def mask_from_probs(
        self, probs: np.ndarray, threshold: float | None = None, presence: float | None = None
    ) -> np.ndarray:
        """Threshold ``probs`` and apply the weights' post-processing and gate: ``(H, W)`` bool (as
        :meth:`Segmenter.mask_from_probs`)."""
        return slice_mask(probs, self.prep, threshold, presence)


def check_against_torch(
    weights_folder: str | Path,
    onnx_path: str | Path,
    batch_sizes: tuple[int, ...] = (1, 3),
    seed: int = 0,
) -> float:
    """Largest absolute difference between PyTorch and ONNX Runtime logits on random inputs.

    Args:
        weights_folder: the folder the file was exported from.
        onnx_path: the exported file.
        batch_sizes: batches to compare (more than one checks the dynamic batch dimension).
        seed: for the random ``(N, C, S, S)`` standard-normal inputs.

    Returns:
        ``max |logits_torch - logits_onnx|`` over every batch and output (mask logits, and the tumour-present
        logits of a model with a head; float32 export: typically ~1e-5).
    """
    import torch

    from brainviewer.model.segmenter import load_model

    model, prep = load_model(weights_folder, map_location="cpu")
    onnx_model = OnnxSegmenter.from_file(onnx_path, prep=prep, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n in batch_sizes:
        batch = rng.standard_normal((n, prep.in_channels, prep.input_size, prep.input_size)).astype(np.float32)
        with torch.inference_mode():
            expected = [t if t is None else t.numpy() for t in split_output(model(torch.from_numpy(batch)))]
        for got, want in zip(onnx_model.outputs(batch), expected, strict=True):
            if (got is None) != (want is None):
                raise ValueError("The ONNX file and the weights disagree on the tumour-present output; export again.")
            if got is None:
                continue
            if got.shape != want.shape:
                raise ValueError(f"ONNX output shape {got.shape} differs from PyTorch's {want.shape} for batch {n}.")
            worst = max(worst, float(np.abs(got - want).max()))
    return worst
