"""Model cards carry the Hub's metadata: pipeline tag, library, license, datasets, metrics and a model-index
holding exactly the results the weights folder records (checked by parsing with huggingface_hub)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from brainviewer.model.hub_card import (
    CardRecords,
    check_card,
    folder_card_data,
    front_matter_lines,
    refresh_card,
    split_front_matter,
    with_front_matter,
)
from brainviewer.model.modelcard import front_matter
from brainviewer.model.weights import WEIGHTS_DIR, list_local_weights
from tests.model.test_hub import hub  # noqa: F401  (the stand-in Hub fixture)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = list_local_weights(WEIGHTS_DIR)
SPLIT = {"train": ["a", "b", "c"], "val": ["d", "e"], "mode": "random", "seed": 7, "folds": 0, "fold": 0}
VALIDATION = {"patients": 2, "mean_volume_dice": 0.71234, "median_volume_dice": 0.7, "threshold": 0.5}


def _summary(mean: float, low: float, high: float) -> dict:
    return {"n": 2, "mean": mean, "sd": 0.1, "median": mean, "q1": low, "q3": high, "ci_low": low, "ci_high": high}


SCORES = {
    "per_patient_scores": {
        "volume_dice": _summary(0.8, 0.75, 0.85),
        "sensitivity": _summary(0.81, 0.7, 0.9),
        "precision": _summary(0.82, 0.7, 0.9),
        "volume_similarity": _summary(0.9, 0.85, 0.95),
        "hd95": _summary(3.25, 2.0, 4.5),
        "surface_dice": _summary(0.93, 0.9, 0.96),
    },
    "distance_unit": "px",
    "surface_dice_tolerance": 2.0,
}


@pytest.fixture
def folder(tmp_path: Path, tiny_weights: Path) -> Path:
    """A copy of the tiny weights with a training record on a dataset folder named ``lgg``."""
    out = tmp_path / "weights" / "my-model"
    shutil.copytree(tiny_weights, out)
    (out / "train_config.json").write_text(json.dumps({"data": "/data/lgg", "init_weights": None}))
    (out / "split.json").write_text(json.dumps(SPLIT))
    (out / "validation.json").write_text(json.dumps(VALIDATION))
    return out


def _results(data) -> dict[str, list[tuple[float, str]]]:
    out: dict[str, list[tuple[float, str]]] = {}
    for result in data.eval_results or []:
        assert result.task_type == "image-segmentation"
        out.setdefault(result.metric_type, []).append((result.metric_value, result.metric_name))
    return out


def test_a_folder_with_a_validation_record_reports_it(folder: Path) -> None:
    old, new = refresh_card(folder)
    assert old == "# tiny test model\n" and new.endswith("\n# tiny test model\n")  # the body is kept
    data = check_card(new)  # parsed back by huggingface_hub.ModelCard, as the Hub reads it
    assert data.pipeline_tag == "image-segmentation"
    assert data.library_name == "segmentation-models-pytorch"
    assert data.license == "mit" and "brain-mri" in data.tags
    assert data.datasets == ["lgg-mri-segmentation"] and data.metrics == ["dice"]
    assert data.model_name == "my-model"
    results = _results(data)
    assert [v for v, _ in results["dice"]] == [0.7123, 0.7]
    split = data.eval_results[0].dataset_split
    assert split == "2 held-out patients (random split by patient, seed 7; split.json)"


def test_an_evaluation_report_gives_every_score_with_its_interval(folder: Path) -> None:
    (folder / "evaluation").mkdir()
    (folder / "evaluation" / "evaluation.json").write_text(
        json.dumps({"summary": {"patients": 2}, "scores": SCORES, "patients": []})
    )
    data = check_card(refresh_card(folder)[1])
    results = _results(data)
    assert set(data.metrics) == {"dice", "hd95", "surface_dice", "sensitivity", "precision", "volume_similarity"}
    ((dice, name),) = results["dice"]
    assert dice == 0.8 and "95% bootstrap CI 0.750-0.850" in name and "mean of 2 patients" in name
    ((hd95, name),) = results["hd95"]
    assert hd95 == 3.25 and ", px" in name and "CI 2.00-4.50" in name
    ((sdice, name),) = results["surface_dice"]
    assert sdice == 0.93 and "tolerance 2 px" in name


def test_a_cross_validation_report_comes_first(folder: Path) -> None:
    (folder / "evaluation").mkdir()
    (folder / "evaluation" / "evaluation.json").write_text(json.dumps({"summary": {}, "scores": SCORES}))
    cv_scores = {**SCORES, "per_patient_scores": {"volume_dice": _summary(0.66, 0.6, 0.7)}}
    (folder / "cv_evaluation.json").write_text(
        json.dumps({"pooled": {"folds": 5, "patients": 110}, "scores": cv_scores})
    )
    data = folder_card_data(folder)
    assert data.eval_results[0].dataset_split == "cross-validation: 110 patients of 5 folds pooled"
    assert _results(data) == {"dice": [(0.66, _results(data)["dice"][0][1])]}


def test_a_cross_validation_folder_gives_the_false_positive_rates_after_the_3d_step_and_of_a_slice_alone(
    folder: Path,
) -> None:
    cv_scores = {**SCORES, "per_patient_scores": {"volume_dice": _summary(0.84, 0.8, 0.87)}}
    single = {"fp": 7, "tumour_free_slices": 350, "fp_rate": 0.02}
    (folder / "cross_validation").mkdir()  # where cv-evaluate --out FOLDER/cross_validation puts it
    (folder / "cross_validation" / "cv_evaluation.json").write_text(
        json.dumps(
            {
                "pooled": {
                    "folds": 5,
                    "patients": 88,
                    "fp_rate_empty_slices": 0.01,
                    "fp_slices": 4,
                    "empty_slices": 400,
                },
                "scores": cv_scores,
                "single_slice": {
                    "ungated": {**single, "fp": 40, "fp_rate": 0.11},
                    "gated_leave_one_patient_out": single,
                },
            }
        )
    )
    data = check_card(refresh_card(folder)[1])
    assert data.eval_results[0].dataset_split == "cross-validation: 88 patients of 5 folds pooled"
    results = _results(data)
    assert results["dice"][0][0] == 0.84
    (after_3d, text_3d), (alone, text_alone) = results["false_positive_rate"]
    assert after_3d == 0.01 and "3-D step (4 of 400)" in text_3d
    assert alone == 0.02 and "each predicted alone" in text_alone and "(7 of 350)" in text_alone


def test_a_fine_tuned_model_lists_its_base_models_data(folder: Path, tiny_weights: Path) -> None:
    base = folder.parent / "base-model"
    shutil.copytree(tiny_weights, base)
    (base / "train_config.json").write_text(json.dumps({"data": "/data/lgg"}))
    (folder / "train_config.json").write_text(json.dumps({"data": "/x/figshare", "init_weights": "/else/base-model"}))
    (folder / "split.json").write_text(json.dumps({**SPLIT, "folds": 5, "fold": 0}))
    data = folder_card_data(folder)
    assert data.datasets == ["figshare-brain-tumor", "lgg-mri-segmentation"]
    assert "held-out images (fold 1 of 5 of a cross-validation" in data.eval_results[0].dataset_split


def test_front_matter_is_replaced_not_stacked() -> None:
    data = folder_card_data(Path("/nonexistent"))
    card = "---\nlicense: apache-2.0\n---\n# Title\n\n---\na rule, not front matter\n"
    once = with_front_matter(card, data)
    assert with_front_matter(once, data) == once
    yaml, body = split_front_matter(once)
    assert "license: mit" in yaml and "apache" not in once
    assert body == "# Title\n\n---\na rule, not front matter\n"
    with pytest.raises(ValueError, match="closing"):
        split_front_matter("---\nlicense: mit\n# no end\n")
    with pytest.raises(ValueError, match="lacks"):
        check_card("---\nlicense: mit\n---\n# card\n")


def test_training_cards_carry_the_metadata_of_their_run() -> None:
    lines = front_matter(
        "Unet / resnet18", "trained.", 3, 256, None, CardRecords("run-1", "/d/lgg", [], SPLIT, VALIDATION)
    )
    data = check_card("\n".join(lines) + "\n")
    assert data.model_name == "run-1" and _results(data)["dice"][0][0] == 0.7123
    assert lines[: len(front_matter_lines(data))] == front_matter_lines(data)


@pytest.mark.skipif(not SHIPPED, reason="no weights folders under weights/")
@pytest.mark.parametrize("weights", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_cards_carry_up_to_date_hub_metadata(weights: Path) -> None:
    old, new = refresh_card(weights)
    assert old == new, f"run: python scripts/card_metadata.py {weights.relative_to(ROOT)}"
    data = check_card(old)
    assert data.pipeline_tag == "image-segmentation" and data.library_name == "segmentation-models-pytorch"
    assert data.datasets and data.metrics and data.eval_results
    cv, single = weights / "cross_validation" / "cv_evaluation.json", weights / "evaluation" / "evaluation.json"
    report = cv if cv.is_file() else single  # the cross-validation comes first
    if report.is_file():  # the model-index is that report's numbers, not invented ones
        scores = json.loads(report.read_text())["scores"]["per_patient_scores"]
        assert _results(data)["dice"][0][0] == round(scores["volume_dice"]["mean"], 4)
        assert _results(data)["hd95"][0][0] == round(scores["hd95"]["mean"], 4)
        assert _results(data)["surface_dice"][0][0] == round(scores["surface_dice"]["mean"], 4)


def test_the_script_checks_and_writes_only_the_front_matter(folder: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import card_metadata
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert card_metadata.main(["--check", str(folder)]) == 1
    assert (folder / "README.md").read_text() == "# tiny test model\n"  # --check writes nothing
    assert card_metadata.main([str(folder)]) == 0
    assert card_metadata.main(["--check", str(folder)]) == 0
    assert split_front_matter((folder / "README.md").read_text())[1] == "# tiny test model\n"


def test_the_script_keeps_the_cards_file_mode(folder: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import card_metadata
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    (folder / "README.md").chmod(0o644)
    assert card_metadata.main([str(folder)]) == 0
    assert (folder / "README.md").stat().st_mode & 0o777 == 0o644


def test_a_pushed_folder_takes_its_evaluation_report_and_card_metadata_to_the_hub(
    request: pytest.FixtureRequest, folder: Path
) -> None:
    """Push (stand-in Hub, see tests/model/test_hub.py) a folder with a report; download it; load it with smp."""
    from brainviewer.compat import import_smp
    from brainviewer.model.hub import download_weights, push_weights
    from tests.model.test_hub import ALICE

    stand_in = request.getfixturevalue("hub")
    (folder / "evaluation").mkdir()
    (folder / "evaluation" / "evaluation.json").write_text(json.dumps({"summary": {"patients": 2}, "scores": SCORES}))
    (folder / "evaluation" / "per_patient.csv").write_text("patient_id\nd\ne\n")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import card_metadata
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert card_metadata.main([str(folder)]) == 0
    sha = push_weights(folder, "alice/carded", token=ALICE).rsplit("/", 1)[1]
    pushed = stand_in.repos["alice/carded"].commits[sha]
    assert {"evaluation/evaluation.json", "evaluation/per_patient.csv", "README.md", "split.json"} <= set(pushed)
    local = download_weights("alice/carded", revision=sha, token=ALICE)
    assert (local / "evaluation" / "evaluation.json").is_file()
    data = check_card((local / "README.md").read_text())
    assert _results(data)["dice"][0][0] == 0.8
    assert type(import_smp().from_pretrained(str(local))).__name__ == "Unet"


def test_a_trained_and_published_run_carries_its_results(
    phantom_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny training run: its best/ card and the card publish_weights writes hold the run's validation."""
    from brainviewer.compat import import_smp
    from brainviewer.training.loop import train
    from tests.training.test_train import tiny_config

    run = train(tiny_config(phantom_dataset, tmp_path / "runs", "hubrun", epochs=1))
    validation = json.loads((run / "best" / "validation.json").read_text())
    data = check_card((run / "best" / "README.md").read_text())
    assert data.model_name == "hubrun" and data.datasets == [phantom_dataset.name]
    assert _results(data)["dice"][0][0] == round(validation["mean_volume_dice"], 4)
    assert data.eval_results[0].dataset_split.startswith("1 held-out patient (")

    monkeypatch.setenv("BRAINVIEWER_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setattr(sys, "argv", ["publish_weights.py", str(run), "published"])
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import publish_weights
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    publish_weights.main()
    published = tmp_path / "weights" / "published"
    data = check_card((published / "README.md").read_text())
    assert data.model_name == "published"
    assert refresh_card(published)[0] == refresh_card(published)[1]  # as scripts/card_metadata.py would write it
    assert type(import_smp().from_pretrained(str(published))).__name__ == "Unet"
