"""Writing predicted masks for files and folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from brainviewer.evaluation.predict import plan_jobs, predict_paths
from brainviewer.model.segmenter import Segmenter


@pytest.fixture
def segmenter(tiny_weights: Path) -> Segmenter:
    return Segmenter.from_folder(tiny_weights, device="cpu")


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    """A folder tree of scans of several sizes and types, with things to skip."""
    root = tmp_path / "scans"
    (root / "sub" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(np.zeros((48, 80), np.uint8)).save(root / "a_mask.png")  # ground truth: skipped
    tifffile.imwrite(root / "sub" / "b.tif", rng.integers(0, 4000, (70, 50), dtype=np.uint16))
    Image.fromarray(rng.integers(0, 255, (33, 65), dtype=np.uint8)).save(root / "sub" / "deeper" / "c.jpg")
    (root / "sub" / "notes.txt").write_text("not a scan")  # unsupported: skipped
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / ".hidden.png")  # hidden: skipped
    return root


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_folder_layout_sizes_and_values(segmenter: Segmenter, scans: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    written, failed = predict_paths(segmenter, [scans], out, threshold=None)
    assert failed == []
    assert written == [out / "a_pred.png", out / "sub" / "b_pred.png", out / "sub" / "deeper" / "c_pred.png"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a_pred.png",
        "sub/b_pred.png",
        "sub/deeper/c_pred.png",
    ]
    for path, shape in zip(written, [(48, 80), (70, 50), (33, 65)], strict=True):
        mask = read_png(path)
        assert mask.shape == shape and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}


def use_probs(monkeypatch: pytest.MonkeyPatch, segmenter: Segmenter, probs) -> None:
    """Make ``segmenter`` answer ``probs(images)`` (no tumour-present head) wherever predict asks it."""

    def slices(images: list[np.ndarray], batch_size: int = 8, levels: object = None) -> tuple[list, list]:
        return probs(images, batch_size), [None] * len(images)

    monkeypatch.setattr(segmenter, "predict_slices", slices)


def test_masks_are_the_models_thresholded_post_processed_probs(
    segmenter: Segmenter, scans: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With known probabilities: the threshold and the weights' post-processing are applied, in batches."""
    batches: list[int] = []

    def fake_probs(images: list[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
        batches.append(len(images))
        out = []
        for image in images:
            probs = np.zeros(image.shape[:2], dtype=np.float32)
            probs[0:5, 0:5] = 0.9  # 25 px
            probs[10, 10] = 0.9  # 1 px speck
            probs[12:14, 12:14] = 0.35  # 4 px, below the model's threshold
            out.append(probs)
        return out

    use_probs(monkeypatch, segmenter, fake_probs)
    segmenter.prep.min_component_px = 2
    written, _ = predict_paths(segmenter, [scans], tmp_path / "o1", threshold=None, batch_size=2)
    assert batches == [2, 1]  # three scans in batches of two
    mask = read_png(written[0]) > 0
    expected = np.zeros((48, 80), dtype=bool)
    expected[0:5, 0:5] = True  # the speck went (min 2 px), the 0.35 region is below 0.5
    assert np.array_equal(mask, expected)
    written, _ = predict_paths(segmenter, [scans / "a.png"], tmp_path / "o2", threshold=0.3)
    expected[12:14, 12:14] = True
    assert np.array_equal(read_png(written[0]) > 0, expected)


def test_file_inputs_and_explicit_failures(segmenter: Segmenter, scans: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    inputs = [scans / "sub" / "b.tif", scans / "a_mask.png", scans / "sub" / "notes.txt", tmp_path / "missing.png"]
    written, failed = predict_paths(segmenter, inputs, out, threshold=0.5)
    assert written == [out / "b_pred.png"]
    assert read_png(out / "b_pred.png").shape == (70, 50)
    reasons = dict(failed)
    assert set(reasons) == set(inputs[1:])
    assert "ground-truth" in reasons[scans / "a_mask.png"]
    assert "not supported" in reasons[scans / "sub" / "notes.txt"]
    assert "no such file" in reasons[tmp_path / "missing.png"]


def test_unreadable_files_are_reported_not_fatal(segmenter: Segmenter, scans: Path, tmp_path: Path) -> None:
    (scans / "broken.png").write_bytes(b"this is not a png")
    (scans / "empty.tif").write_bytes(b"")
    written, failed = predict_paths(segmenter, [scans], tmp_path / "out", threshold=None)
    assert len(written) == 3
    reasons = dict(failed)
    assert set(reasons) == {scans / "broken.png", scans / "empty.tif"}
    assert "could not be read" in reasons[scans / "broken.png"]
    assert "empty" in reasons[scans / "empty.tif"]
    assert not (tmp_path / "out" / "broken_pred.png").exists()


def test_never_overwrites_unless_asked(segmenter: Segmenter, scans: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "b_pred.png").write_bytes(b"my own file")
    written, failed = predict_paths(segmenter, [scans], out, threshold=None)
    assert [p.name for p in written] == ["a_pred.png", "c_pred.png"]
    assert failed == [
        (
            scans / "sub" / "b.tif",
            f"{out / 'sub' / 'b_pred.png'} already exists; pass --overwrite to replace it or choose another --out",
        )
    ]
    assert (out / "sub" / "b_pred.png").read_bytes() == b"my own file"
    # a second run refuses everything
    written, failed = predict_paths(segmenter, [scans], out, threshold=None)
    assert written == [] and len(failed) == 3
    written, failed = predict_paths(segmenter, [scans], out, threshold=None, overwrite=True)
    assert len(written) == 3 and failed == []
    assert read_png(out / "sub" / "b_pred.png").shape == (70, 50)
    assert not [p for p in out.rglob(".*")]  # no temporary files left


def test_two_inputs_for_one_output_are_refused(segmenter: Segmenter, tmp_path: Path) -> None:
    folder = tmp_path / "dup"
    folder.mkdir()
    for suffix in (".png", ".bmp"):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / f"x{suffix}")
    written, failed = predict_paths(segmenter, [folder, folder / "x.png"], tmp_path / "out", threshold=None)
    assert written == [tmp_path / "out" / "x_pred.png"]
    assert len(failed) == 2 and all("already writes" in reason for _, reason in failed)


def test_output_folder_inside_the_input_folder_is_not_read_back(segmenter: Segmenter, scans: Path) -> None:
    out = scans / "predictions"
    predict_paths(segmenter, [scans], out, threshold=None)
    jobs, failed = plan_jobs([scans], out, overwrite=True)
    assert [job.source.name for job in jobs] == ["a.png", "b.tif", "c.jpg"] and failed == []


def test_empty_folder_and_bad_threshold(segmenter: Segmenter, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    written, failed = predict_paths(segmenter, [tmp_path / "empty"], tmp_path / "out", threshold=None)
    assert written == [] and "holds no scans" in failed[0][1]
    with pytest.raises(ValueError, match="threshold"):
        predict_paths(segmenter, [tmp_path / "empty"], tmp_path / "out", threshold=1.5)


def test_volume_keeps_the_largest_3d_component_per_folder(
    segmenter: Segmenter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each folder is one patient; a blob away from the lesion goes, another patient's lesion stays."""
    root = tmp_path / "patients"

    def slice_with(*boxes: tuple[slice, slice]) -> np.ndarray:
        image = np.zeros((32, 32), np.uint8)
        for box in boxes:
            image[box] = 255
        return image

    lesion, stray = (slice(2, 8), slice(2, 8)), (slice(28, 30), slice(28, 30))
    slices = {
        "p1/p1_1.png": slice_with(lesion),
        "p1/p1_2.png": slice_with(lesion),
        "p1/p1_10.png": slice_with(lesion, stray),  # natural order: after p1_2
        "p2/p2_1.png": slice_with(stray),  # p2's only finding: its largest component
    }
    for name, image in slices.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / name)
    (root / "p1" / "p1_3.png").write_bytes(b"broken")

    def probs_from_image(images: list[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
        return [(np.asarray(image).reshape(32, 32, -1)[..., 0] > 128).astype(np.float32) * 0.9 for image in images]

    use_probs(monkeypatch, segmenter, probs_from_image)
    segmenter.prep.min_component_px = 0
    calls: list[tuple[int, int]] = []
    out = tmp_path / "vol"
    written, failed = predict_paths(
        segmenter, [root], out, batch_size=2, volume=True, progress=lambda d, t: calls.append((d, t))
    )
    assert [p.relative_to(out).as_posix() for p in written] == [
        "p1/p1_1_pred.png",
        "p1/p1_2_pred.png",
        "p1/p1_10_pred.png",
        "p2/p2_1_pred.png",
    ]
    assert [path.name for path, _ in failed] == ["p1_3.png"]
    assert calls == [(4, 5), (5, 5)]  # after each patient
    expected_lesion = slice_with(lesion) > 0
    assert np.array_equal(read_png(out / "p1" / "p1_10_pred.png") > 0, expected_lesion)  # stray blob removed
    assert np.array_equal(read_png(out / "p2" / "p2_1_pred.png") > 0, slice_with(stray) > 0)
    # without volume=True every slice is on its own: the stray blob stays
    written, _ = predict_paths(segmenter, [root / "p1" / "p1_10.png"], tmp_path / "flat")
    assert np.array_equal(read_png(written[0]) > 0, slice_with(lesion, stray) > 0)
