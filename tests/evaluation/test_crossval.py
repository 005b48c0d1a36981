"""Cross-validation pooling: every fold scored on its own patients with its own post-processing,
checked by hand on the hand-made dataset of ``test_evaluate``."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from test_evaluate import dataset_root, probs_from_channel_0  # noqa: F401  (dataset_root is a fixture)

from brainviewer import cli
from brainviewer.data.datasets import open_dataset
from brainviewer.data.split import Split
from brainviewer.evaluation.crossval import (
    FoldResult,
    check_folds,
    evaluate_folds,
    fold_weights,
    pooled_summary,
    single_slice_summary,
    write_cv_report,
)
from brainviewer.evaluation.single_slice import PatientSlices


class ChannelZeroModel:
    """Reads the probabilities the hand-made scans carry in channel 0; post-processing from ``threshold``."""

    def __init__(self, threshold: float) -> None:
        self.prep = SimpleNamespace(
            threshold=threshold,
            min_component_px=0,
            keep_largest=False,
            volume_keep_largest=False,
            tta_flip=False,
            tumour_gate=None,
        )

    def predict_probs_batch(self, scans: list[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
        return probs_from_channel_0(scans)


def make_fold(folder: Path, val: list[str], train: list[str], threshold: float, as_run: bool = False) -> Path:
    """A weights folder (or a run folder whose best/ is one) that holds out ``val``; the threshold goes
    in config.json so the fake loader can read it back."""
    weights = folder / "best" if as_run else folder
    weights.mkdir(parents=True)
    (weights / "config.json").write_text(json.dumps({"threshold": threshold}))
    Split(train=train, val=val, mode="random", seed=1, folds=2, fold=0).save(folder / "split.json")
    return folder


def load_fake(weights: Path) -> ChannelZeroModel:
    return ChannelZeroModel(json.loads((weights / "config.json").read_text())["threshold"])


@pytest.fixture
def folds(tmp_path: Path) -> list[Path]:
    return [
        make_fold(tmp_path / "fold0", ["P1"], ["P2", "P3"], 0.5, as_run=True),
        make_fold(tmp_path / "fold1", ["P2", "P3"], ["P1"], 0.3),
    ]


def test_pooled_scores_by_hand(dataset_root: Path, folds: list[Path]) -> None:  # noqa: F811
    results = evaluate_folds(open_dataset(dataset_root), folds, load_fake)
    assert [r.report.threshold for r in results] == [0.5, 0.3]  # each fold's own post-processing
    assert [[p.patient_id for p in r.report.patients] for r in results] == [["P1"], ["P2", "P3"]]
    assert results[0].weights == folds[0] / "best" and results[1].weights == folds[1]
    # P1 at 0.5: 14/20 (see test_evaluate); at 0.3, P2 stays perfect and P3's 4 px are found
    # with its 2 px false alarm: tp 4, fp 2 -> 8/10
    dice = [p.volume_dice for r in results for p in r.report.patients]
    assert dice == pytest.approx([0.7, 1.0, 0.8])
    pooled = pooled_summary(results, dataset_patients=4)["pooled"]
    assert pooled["patients"] == 3 and pooled["slices"] == 7 and pooled["coverage"] == 0.75
    assert pooled["mean_volume_dice"] == pytest.approx(2.5 / 3)
    assert pooled["median_volume_dice"] == pytest.approx(0.8)
    # micro: tp 7 + 5 + 4, truth 10 + 5 + 4, predicted 10 + 5 + 6
    assert pooled["micro_dice"] == pytest.approx(32 / 40)
    # false-positive slices: P1's empty slice at 0.5, P3's at 0.3; P2's is clean
    assert (pooled["fp_slices"], pooled["empty_slices"]) == (2, 3)
    assert pooled["fp_rate_empty_slices"] == pytest.approx(2 / 3)
    assert pooled["fold_mean_dice_mean"] == pytest.approx(0.8) and pooled["fold_mean_dice_std"] == pytest.approx(0.1)
    assert pooled["seen_by_base"] == 0
    assert pooled["patients_below_0.30"] == 0
    worst = [(w["patient"], w["fold"], w["volume_dice"]) for w in pooled["worst_patients"]]
    assert worst == [
        ("P1", str(folds[0]), pytest.approx(0.7)),
        ("P3", str(folds[1]), pytest.approx(0.8)),
        ("P2", str(folds[1]), pytest.approx(1.0)),
    ]  # lowest first
    assert "single_slice" not in pooled_summary(results)  # only when the slices were predicted alone


def _slices(presence: list[float], shown: list[bool], tumour: list[bool]) -> PatientSlices:
    """A patient whose shown tumour slices are found exactly (overlap = predicted = truth = 10 px)."""
    shown_a, tumour_a = np.array(shown), np.array(tumour)
    return PatientSlices(
        presence=np.array(presence, dtype=np.float64),
        shown=shown_a,
        has_tumour=tumour_a,
        overlap=np.where(shown_a & tumour_a, 10, 0),
        predicted=np.where(shown_a, 10, 0),
        truth=np.where(tumour_a, 10, 0),
    )


def test_single_slice_figures_by_hand() -> None:
    """Two folds. Fold a (gate 0.5, chosen for 0% false positives): A1 has a false alarm at presence 0.2 and
    a tumour slice at 0.9, A2 a false alarm at 0.6 and a tumour slice at 0.7. Fold b has no gate."""
    fold_a = {
        "A1": _slices([0.2, 0.9, 0.1], [True, True, False], [False, True, False]),
        "A2": _slices([0.6, 0.7], [True, True], [False, True]),
    }
    fold_b = {"B1": _slices([np.nan, np.nan], [True, False], [False, False])}
    split = Split(train=[], val=[], mode="random", seed=1, folds=2, fold=0)
    results = [
        FoldResult("a", Path("a"), split, None, slices=fold_a, gate=0.5, gate_max_fp=0.0),  # type: ignore[arg-type]
        FoldResult("b", Path("b"), split, None, slices=fold_b, gate=None),  # type: ignore[arg-type]
    ]
    summary = single_slice_summary(results)
    assert summary is not None and summary["gates"] == {"a": 0.5, "b": None}
    ungated = summary["ungated"]  # every shown slice: 3 false alarms on 5 tumour-free slices
    assert (ungated["fp"], ungated["tumour_free_slices"], ungated["tumour_slices_shown"]) == (3, 5, 2)
    own = summary["gated_own_threshold"]  # A1's 0.2 is gated, A2's 0.6 is not; B1 is not gated
    assert (own["fp"], own["tumour_slices_shown"]) == (2, 2)
    # leave one patient out in fold a: A1 gets the threshold that clears A2's alarm (0.61: A1's alarm at 0.2 goes,
    # its tumour slice at 0.9 stays); A2 gets the one that clears A1's (0.21: A2's alarm at 0.6 stays)
    honest = summary["gated_leave_one_patient_out"]
    assert (honest["fp"], honest["tumour_slices_shown"]) == (2, 2)
    assert honest["fp_rate"] == pytest.approx(2 / 5)
    results[1].slices = None
    assert single_slice_summary(results) is None  # a fold not predicted alone: no pooled figure


def test_patients_a_fold_s_base_model_trained_on_are_counted(
    dataset_root: Path,  # noqa: F811
    folds: list[Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Folds fine-tuned from a model that trained on their validation patients flatter themselves: say so."""
    split = Split.load(folds[1] / "split.json")
    Split(split.train, split.val, split.mode, split.seed, 2, 1, base_train=["P3"]).save(folds[1] / "split.json")
    with caplog.at_level("WARNING", logger="brainviewer.evaluation.crossval"):
        results = evaluate_folds(open_dataset(dataset_root), folds, load_fake)
    assert pooled_summary(results)["pooled"]["seen_by_base"] == 1
    assert "1 of its 2 validation patients were trained on by its base model (P3)" in caplog.text


def test_report_files_and_no_silent_overwrite(dataset_root: Path, folds: list[Path], tmp_path: Path) -> None:  # noqa: F811
    results = evaluate_folds(open_dataset(dataset_root), folds, load_fake)
    paths = write_cv_report(results, tmp_path / "cv", dataset_patients=3)
    document = json.loads(paths["json"].read_text())
    assert document["pooled"]["mean_volume_dice"] == pytest.approx(2.5 / 3)
    assert [f["summary"]["patients"] for f in document["folds"]] == [1, 2]
    assert [(p["fold"], p["patient_id"]) for p in document["patients"]] == [
        (str(folds[0]), "P1"),
        (str(folds[1]), "P2"),
        (str(folds[1]), "P3"),
    ]
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [(r["patient_id"], float(r["volume_dice"])) for r in rows] == [("P1", 0.7), ("P2", 1.0), ("P3", 0.8)]
    card = paths["markdown"].read_text()  # the section a model card quotes
    assert (
        "| 2-fold cross-validation, 3 patients | patients | mean Dice per patient (bootstrap 95% CI) | median |" in card
    )
    assert "| all | 3 | **0.833** (" in card and ") | 0.800 |" in card
    assert "Fold means 0.700 / 0.900 (SD 0.100). 0 of 3 patients score below 0.30; the worst: P1 0.70, P3 0.80" in card
    assert "with the 3-D step: 66.7% (2 of 3)." in card
    assert "predicted alone" not in card  # only with --single-slice
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_cv_report(results, tmp_path / "cv")
    results[0].slices = {"P1": _slices([0.2, 0.9], [True, True], [False, True])}  # as --single-slice gives them
    results[1].slices = {"P2": _slices([0.6], [False], [False]), "P3": _slices([0.7], [True], [False])}
    results[0].gate = 0.5
    paths = write_cv_report(results, tmp_path / "cv", overwrite=True)
    card = paths["markdown"].read_text()
    assert "| no gate | 66.7% (2 of 3) | 1 of 1 |" in card
    assert "| each fold's gate (chosen on these patients) | 33.3% (1 of 3) | 1 of 1 |" in card


def test_overlapping_folds_are_refused(dataset_root: Path, tmp_path: Path) -> None:  # noqa: F811
    a = make_fold(tmp_path / "a", ["P1", "P2"], ["P3"], 0.5)
    b = make_fold(tmp_path / "b", ["P2", "P3"], ["P1"], 0.5)
    with pytest.raises(ValueError, match="P2 is held out by both"):
        evaluate_folds(open_dataset(dataset_root), [a, b], load_fake)
    check_folds([Split.load(a / "split.json")], ["a"])  # one fold alone is fine


def test_fold_folder_errors(dataset_root: Path, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(FileNotFoundError, match="not a folder"):
        fold_weights(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no weights"):
        fold_weights(tmp_path / "empty")
    no_split = tmp_path / "no_split"
    no_split.mkdir()
    (no_split / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"split\.json"):
        fold_weights(no_split)
    elsewhere = make_fold(tmp_path / "elsewhere", ["Q9"], ["P1"], 0.5)
    with pytest.raises(ValueError, match="none of the validation patients"):
        evaluate_folds(open_dataset(dataset_root), [elsewhere], load_fake)


def _no_model(*args: object, **kwargs: object) -> None:
    raise AssertionError("no model should be loaded")


def test_cli_cv_evaluate_with_real_weights(
    phantom_dataset: Path,
    tiny_weights: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from brainviewer.data.split import split_patients
    from brainviewer.model.segmenter import Segmenter

    ids = open_dataset(phantom_dataset).patient_ids
    folders = []
    for k in range(3):
        folder = tmp_path / f"fold{k}"
        shutil.copytree(tiny_weights, folder)
        split_patients(ids, folds=3, fold=k, seed=4).save(folder / "split.json")
        folders.append(str(folder))
    out = tmp_path / "report"
    argv = ["cv-evaluate", str(phantom_dataset), *folders, "--device", "cpu", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["pooled"]["patients"] == len(ids) and printed["pooled"]["coverage"] == 1.0
    assert len(printed["folds"]) == 3
    written = json.loads((out / "cv_evaluation.json").read_text())
    assert sorted(p["patient_id"] for p in written["patients"]) == sorted(ids)
    assert len(list((out / "folds").glob("*.json"))) == 3  # each scored fold, for a later run to reuse
    assert cli.main(argv) == 2  # the report exists: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    monkeypatch.setattr(Segmenter, "from_folder", _no_model)
    assert cli.main([*argv, "--overwrite"]) == 0  # every fold is reused
    assert json.loads(capsys.readouterr().out)["pooled"] == printed["pooled"]
    shutil.rmtree(out / "folds")  # nothing to reuse: a report that exists is refused before any model is loaded
    assert cli.main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    monkeypatch.undo()
    assert cli.main([*argv[:-3], "--quiet", "--single-slice"]) == 0  # no --out: nothing written
    alone = json.loads(capsys.readouterr().out)["single_slice"]
    assert alone["gates"] == dict.fromkeys(folders)  # these weights have no gate: gated figures are the ungated
    assert alone["ungated"] == alone["gated_own_threshold"] == alone["gated_leave_one_patient_out"]
    assert alone["ungated"]["tumour_free_slices"] + alone["ungated"]["tumour_slices"] == printed["pooled"]["slices"]


def test_pooled_scores_per_group(dataset_root: Path, folds: list[Path]) -> None:  # noqa: F811
    """Each group's patients pooled over the folds, with their own summary (P1 0.7, P2 1.0, P3 0.8)."""
    results = evaluate_folds(open_dataset(dataset_root), folds, load_fake)
    groups = pooled_summary(results, group_of={"P1": "glioma", "P3": "glioma", "P2": "pituitary"})["groups"]
    assert list(groups) == ["glioma", "pituitary"]
    glioma = groups["glioma"]["scores"]["per_patient_scores"]["volume_dice"]
    assert groups["glioma"]["patients"] == 2 and glioma["n"] == 2
    assert glioma["mean"] == pytest.approx(0.75) and glioma["median"] == pytest.approx(0.75)
    assert glioma["ci_low"] <= 0.75 <= glioma["ci_high"]
    assert groups["pituitary"]["scores"]["per_patient_scores"]["volume_dice"]["mean"] == pytest.approx(1.0)
    unlabelled = pooled_summary(results, group_of={"P1": "glioma"})["groups"]
    assert unlabelled["(no group)"]["patients"] == 2  # patients the CSV lacks are kept, under their own name
    assert "groups" not in pooled_summary(results)


def test_scored_folds_are_reused_until_their_weights_change(
    dataset_root: Path,  # noqa: F811
    folds: list[Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``cache_dir`` keeps each scored fold; a later call loads only the folds whose weights folder changed."""
    loaded: list[Path] = []

    def counting_loader(weights: Path) -> ChannelZeroModel:
        loaded.append(weights)
        return load_fake(weights)

    dataset, cache = open_dataset(dataset_root), tmp_path / "folds"
    first = evaluate_folds(dataset, folds, counting_loader, cache_dir=cache)
    assert len(loaded) == 2 and len(list(cache.glob("*.json"))) == 2
    again = evaluate_folds(dataset, folds, counting_loader, cache_dir=cache)
    assert len(loaded) == 2  # nothing predicted again
    assert pooled_summary(again) == pooled_summary(first)
    assert [(r.name, r.weights, r.split) for r in again] == [(r.name, r.weights, r.split) for r in first]
    (folds[1] / "config.json").write_text(json.dumps({"threshold": 0.5}))  # fold 1's weights changed
    changed = evaluate_folds(dataset, folds, counting_loader, cache_dir=cache)
    assert loaded[2:] == [folds[1]] and changed[1].report.threshold == 0.5
    assert changed[0].report.patients == first[0].report.patients
    (folds[0] / "best" / "README.md").write_text("a new model card")  # the card does not change a prediction
    evaluate_folds(dataset, folds, counting_loader, cache_dir=cache)
    assert len(loaded) == 3
    evaluate_folds(dataset, folds, counting_loader, cache_dir=cache, device_type="cuda")  # bf16 there
    assert len(loaded) == 5
    mask = dataset_root / "P1" / "P1_1_mask.png"
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10**9))  # touched: same bytes
    evaluate_folds(dataset, folds, counting_loader, cache_dir=cache, device_type="cuda")
    assert len(loaded) == 5
    pixels = np.array(Image.open(mask))
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(mask)  # fold 0's patient's mask, corrected
    with caplog.at_level("INFO"):
        evaluate_folds(dataset, folds, counting_loader, cache_dir=cache, device_type="cuda")
    assert loaded[5:] == [folds[0] / "best"] and "changed since" in caplog.text and "files" in caplog.text
    for saved, text in zip(sorted(cache.glob("*.json")), ("{not json", "[]"), strict=True):
        saved.write_text(text)
    caplog.clear()
    with caplog.at_level("WARNING"):
        evaluate_folds(dataset, folds, counting_loader, cache_dir=cache, device_type="cuda")
    assert len(loaded) == 8 and caplog.text.count("could not be reused") == 2


def test_a_saved_fold_keeps_its_single_slice_records(tmp_path: Path) -> None:
    from brainviewer.evaluation.evaluate import EvaluationReport, PatientResult
    from brainviewer.evaluation.fold_cache import load_fold, save_fold

    patient = PatientResult("P1", 2, 1, 0.7, 0.7, 0.0, 10, 10, slice_dice=[1.0, 0.7], slice_max_prob=[0.1, 0.9])
    report = EvaluationReport(0.4, 16, True, [patient], 0.7, 0, 1, tta_flip=True, volume_keep_largest=True)
    split = Split(train=["P2"], val=["P1"], mode="random", seed=1, folds=5, fold=3)
    result = FoldResult("f3", tmp_path, split, report, {"P1": _slices([0.2, 0.9], [True, True], [False, True])}, 0.3)
    result.gate_max_fp = 0.02
    key = {"format": 1, "weights": "abc"}
    save_fold(tmp_path / "f3.json", key, result)
    assert load_fold(tmp_path / "f3.json", {**key, "weights": "other"}, "f3", tmp_path, split) is None
    back = load_fold(tmp_path / "f3.json", key, "f3", tmp_path, split)
    assert back is not None and back.report == report and (back.gate, back.gate_max_fp) == (0.3, 0.02)
    slices = back.slices["P1"]  # type: ignore[index]
    assert slices.shown.dtype == bool and slices.has_tumour.dtype == bool and slices.overlap.dtype.kind == "i"
    assert single_slice_summary([back]) == single_slice_summary([result])
