"""Run a weights folder with ONNX Runtime: export, a Segmenter look-alike, and a check against PyTorch.

The exported graph maps ``image`` ``(N, C, S, S)`` float32 (preprocessed, see
:func:`brainviewer.model.preprocessing.to_input`) to ``logits`` ``(N, 1, S, S)`` float32, with a dynamic batch
dimension ``N`` and the fixed ``S = prep.input_size``. The weights folder's ``preprocessing.json`` is stored
in the ONNX model's metadata (key :data:`PREP_METADATA_KEY`), so a ``.onnx`` file is self-contained.

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

from brainviewer.model.postprocess import postprocess
from brainviewer.model.preprocessing import PREPROCESSING_FILE, Preprocessing, to_input, unletterbox

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
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
                    output_names=[OUTPUT_NAME],
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
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
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
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})[0]

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
        results: list[np.ndarray] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = np.stack([to_input(image, self.prep, levels) for image in chunk])
            if self.prep.tta_flip:  # as Segmenter: the mean of the scan's and its mirror's probabilities
                both = _sigmoid(self.logits(np.concatenate([batch, batch[..., ::-1]])))[:, 0]
                probs = (both[: len(chunk)] + both[len(chunk) :, :, ::-1]) / 2
            else:
                probs = _sigmoid(self.logits(batch))[:, 0]
            results.extend(unletterbox(p, image.shape[:2]) for p, image in zip(probs, chunk, strict=True))
        return results

    def predict_probs(self, image: np.ndarray) -> np.ndarray:
        """Tumour probabilities ``(H, W)`` float32 in ``[0, 1]`` for one scan ``(H, W[, 3])``."""
        return self.predict_probs_batch([image])[0]

    def mask_from_probs(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Threshold ``probs`` and apply the weights' post-processing: ``(H, W)`` bool."""
        cut = self.prep.threshold if threshold is None else threshold
        return postprocess(probs >= cut, self.prep.min_component_px, self.prep.keep_largest)


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
        ``max |logits_torch - logits_onnx|`` over every batch (float32 export: typically ~1e-5).
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
            expected = model(torch.from_numpy(batch)).numpy()
        got = onnx_model.logits(batch)
        if got.shape != expected.shape:
            raise ValueError(f"ONNX output shape {got.shape} differs from PyTorch's {expected.shape} for batch {n}.")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst
