"""ONNX export and the ONNX Runtime backend: same outputs as PyTorch, dynamic batch, Segmenter's API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the ONNX backend is optional: pip install onnx onnxruntime")
pytest.importorskip("onnx", reason="ONNX export needs the onnx package")

from brainviewer.cli import main as cli_main
from brainviewer.model.onnx_backend import (
    PREP_METADATA_KEY,
    OnnxSegmenter,
    check_against_torch,
    export_onnx,
)
from brainviewer.model.segmenter import Segmenter

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiny_onnx(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported with the TorchScript exporter (about 1 s; the dynamo one takes ~15 s on 2 cores)."""
    return export_onnx(tiny_weights, tmp_path_factory.mktemp("onnx") / "tiny.onnx", dynamo=False)


def _scans() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
        rng.integers(0, 255, (50, 80), dtype=np.uint8),  # gray, not square: letterboxed
        rng.integers(0, 4000, (96, 72, 3), dtype=np.uint16),
    ]


def test_export_matches_torch(tiny_weights: Path, tiny_onnx: Path) -> None:
    diff = check_against_torch(tiny_weights, tiny_onnx, batch_sizes=(1, 3))
    assert 0.0 <= diff < TOLERANCE


@pytest.mark.slow
def test_dynamo_export_matches_torch(tiny_weights: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
    out = export_onnx(tiny_weights, tmp_path / "dynamo.onnx", dynamo=True)
    assert check_against_torch(tiny_weights, out, batch_sizes=(1, 3)) < TOLERANCE
    onnx_model = OnnxSegmenter.from_file(out, threads=1)
    scan = _scans()[2]
    expected = Segmenter.from_folder(tiny_weights, device="cpu").predict_probs(scan)
    assert np.abs(onnx_model.predict_probs(scan) - expected).max() < TOLERANCE


def test_onnx_segmenter_matches_segmenter(tiny_weights: Path, tiny_onnx: Path) -> None:
    torch_model = Segmenter.from_folder(tiny_weights, device="cpu")
    onnx_model = OnnxSegmenter.from_file(tiny_onnx, threads=1)
    assert onnx_model.prep == torch_model.prep  # read back from the file's metadata
    assert onnx_model.providers == ["CPUExecutionProvider"]

    scans = _scans()
    expected = torch_model.predict_probs_batch(scans, batch_size=2)
    got = onnx_model.predict_probs_batch(scans, batch_size=2)  # batches of 2 then 1: dynamic batch size
    for scan, e, g in zip(scans, expected, got, strict=True):
        assert g.shape == scan.shape[:2] and g.dtype == np.float32
        assert np.abs(g - e).max() < TOLERANCE
    single = onnx_model.predict_probs(scans[1])
    np.testing.assert_allclose(single, got[1], atol=1e-6)

    probs = np.array([[0.1, 0.6], [0.9, 0.4]], dtype=np.float32)
    np.testing.assert_array_equal(onnx_model.mask_from_probs(probs), [[False, True], [True, False]])
    np.testing.assert_array_equal(onnx_model.mask_from_probs(probs, threshold=0.95), np.zeros((2, 2), bool))
    np.testing.assert_array_equal(onnx_model.mask_from_probs(probs), torch_model.mask_from_probs(probs))

    torch_model.prep.tta_flip = onnx_model.prep.tta_flip = True  # flip TTA gives the same as PyTorch's
    flipped = onnx_model.predict_probs_batch(scans, batch_size=2)
    for e, g in zip(torch_model.predict_probs_batch(scans, batch_size=2), flipped, strict=True):
        assert np.abs(g - e).max() < TOLERANCE
    assert any(np.abs(f - g).max() > 1e-4 for f, g in zip(flipped, got, strict=True))


def test_preprocessing_is_embedded(tiny_weights: Path, tiny_onnx: Path) -> None:
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}
    stored = json.loads(meta[PREP_METADATA_KEY])
    assert stored["input_size"] == 64 and stored["mean"] == [0.1] * 3 and stored["std"] == [0.2] * 3
    graph = onnx.load(str(tiny_onnx)).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 64, 64]
    assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch dimension


def test_export_never_overwrites(tiny_weights: Path, tiny_onnx: Path) -> None:
    before = tiny_onnx.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        export_onnx(tiny_weights, tiny_onnx)
    assert tiny_onnx.read_bytes() == before
    assert [p.name for p in tiny_onnx.parent.iterdir()] == ["tiny.onnx"]  # no temporary file left


def test_cli_export_onnx(tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.onnx"
    code = cli_main(["export-onnx", str(tiny_weights), "--out", str(out), "--exporter", "torchscript"])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert f"wrote {out}" in printed
    diff = float(printed.rsplit("difference:", 1)[1])
    assert diff < TOLERANCE
    assert cli_main(["export-onnx", str(tiny_weights), "--out", str(out)]) == 2  # exists: refused
