"""Weight averaging (model soups): the arithmetic, the checks, the folder it writes and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from brainviewer.cli import main
from brainviewer.data.datasets import open_dataset
from brainviewer.data.split import split_patients
from brainviewer.model.preprocessing import Preprocessing
from brainviewer.model.segmenter import Segmenter, build_model, load_model, save_weights
from brainviewer.training.average import SOURCES_FILE, average_models, average_state_dicts, common_split, write_average


def test_average_state_dicts_by_hand() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "h": torch.tensor([1.0], dtype=torch.float16), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 6.0]), "h": torch.tensor([2.0], dtype=torch.float16), "n": torch.tensor(9)}
    c = {"w": torch.tensor([2.0, 1.0]), "h": torch.tensor([3.0], dtype=torch.float16), "n": torch.tensor(1)}
    averaged = average_state_dicts([a, b, c])
    assert torch.equal(averaged["w"], torch.tensor([2.0, 3.0]))
    assert averaged["h"].dtype == torch.float16 and averaged["h"].item() == 2.0
    assert averaged["n"].item() == 5  # integer buffers (BatchNorm step counts) come from the first


@pytest.mark.parametrize(
    ("states", "message"),
    [
        ([{"w": torch.zeros(2)}], "at least two models"),
        ([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}], "model 2 has other tensors"),
        ([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}], r"model 2's w is \(3,\)"),
        ([{"w": torch.zeros(2)}, {"w": torch.zeros(2, dtype=torch.float64)}], "torch.float64"),
    ],
)
def test_average_state_dicts_refuses_mismatches(states: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        average_state_dicts(states)


def tiny_folder(root: Path, name: str, seed: int, mean: float = 0.1, encoder: str = "resnet18") -> Path:
    torch.manual_seed(seed)
    model = build_model("Unet", encoder, in_channels=3, encoder_depth=3, decoder_channels=(32, 16, 8))
    return save_weights(model, root / name, Preprocessing(input_size=64, mean=[mean] * 3, std=[0.2] * 3))


def test_average_models_is_the_mean_of_the_parameters(tmp_path: Path) -> None:
    a, b = tiny_folder(tmp_path, "a", 0), tiny_folder(tmp_path, "b", 1)
    model, prep = average_models([a, b])
    (ma, _), (mb, _) = load_model(a), load_model(b)
    key = "encoder.conv1.weight"
    expected = (ma.state_dict()[key] + mb.state_dict()[key]) / 2
    assert torch.allclose(model.state_dict()[key], expected, atol=1e-7)
    assert prep.input_size == 64
    # the average of a model with itself is the model
    same, _ = average_models([a, a])
    scan = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    probs = [
        Segmenter(model=m.eval(), prep=prep, device=torch.device("cpu")).predict_probs_batch([scan])[0]
        for m in (same, ma)
    ]
    assert np.allclose(probs[0], probs[1], atol=1e-6)


def test_average_models_refuses_other_input_or_architecture(tmp_path: Path) -> None:
    a = tiny_folder(tmp_path, "a", 0)
    with pytest.raises(ValueError, match="expects other input"):
        average_models([a, tiny_folder(tmp_path, "norm", 1, mean=0.3)])
    with pytest.raises(ValueError, match="average only one architecture"):
        average_models([a, tiny_folder(tmp_path, "mobile", 1, encoder="mobilenet_v2")])
    with pytest.raises(ValueError, match="at least two weights folders"):
        average_models([a])


def test_write_average_scores_on_the_common_split_and_records_its_sources(
    tmp_path: Path, phantom_dataset: Path
) -> None:
    split = split_patients(open_dataset(phantom_dataset).patient_ids, val_count=2, seed=1)
    a, b = tiny_folder(tmp_path, "a", 0), tiny_folder(tmp_path, "b", 1)
    for folder in (a, b):
        split.save(folder / "split.json")
        (folder / "validation.json").write_text(json.dumps({"mean_volume_dice": 0.5}))
    (a / "train_config.json").write_text(json.dumps({"lr": 0.0003}))
    assert common_split([a, b]) == split

    out, summary = write_average([a, b], tmp_path / "weights" / "soup", phantom_dataset, device="cpu")
    assert summary is not None and summary["patients"] == 2
    assert json.loads((out / "validation.json").read_text()) == summary
    assert len(json.loads((out / "threshold_sweep.json").read_text())) > 10
    assert json.loads((out / "split.json").read_text())["val"] == split.val
    record = json.loads((out / SOURCES_FILE).read_text())
    assert [s["folder"] for s in record["sources"]] == [str(a.resolve()), str(b.resolve())]
    assert all(len(s["sha256"]) == 64 and s["mean_volume_dice"] == 0.5 for s in record["sources"])
    assert [s["train_config"] for s in record["sources"]] == [{"lr": 0.0003}, None]
    card = (out / "README.md").read_text()
    assert "weight average" in card and "0.5000" in card and f"{summary['mean_volume_dice']:.4f}" in card
    prep = Segmenter.from_folder(out, device="cpu").prep
    assert (prep.threshold, prep.min_component_px) == (summary["threshold"], summary["min_component_px"])

    with pytest.raises(FileExistsError, match="already exists"):
        write_average([a, b], out)
    (b / "split.json").write_text(json.dumps({**json.loads((a / "split.json").read_text()), "val": []}))
    assert common_split([a, b]) is None
    with pytest.raises(ValueError, match=r"do not share one split\.json"):
        write_average([a, b], tmp_path / "other", phantom_dataset)
    plain, no_summary = write_average([a, b], tmp_path / "plain")  # without data: averaged, not scored
    assert (
        no_summary is None and not (plain / "split.json").exists() and "Not scored" in (plain / "README.md").read_text()
    )


def test_cli_average(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tiny_folder(tmp_path, "a", 0), tiny_folder(tmp_path, "b", 1)
    assert main(["average", str(a), str(b), "--out", str(tmp_path / "soup"), "--device", "cpu"]) == 0
    assert load_model(tmp_path / "soup")[1].input_size == 64
    assert main(["average", str(a), str(b), "--out", str(tmp_path / "soup")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_common_split_carries_every_source_s_inherited_patients(tmp_path: Path) -> None:
    from brainviewer.data.split import Split

    a, b = tiny_folder(tmp_path, "a", 0), tiny_folder(tmp_path, "b", 1)
    Split(["P1", "P2"], ["P3"], "random", 0, base_train=["X1"]).save(a / "split.json")
    Split(["P2", "P1"], ["P3"], "random", 0, base_train=["X2", "P1"]).save(b / "split.json")
    split = common_split([a, b])
    assert split is not None and split.val == ["P3"] and split.base_train == ["X1", "X2"]


def test_an_average_of_gated_models_chooses_its_own_gate_or_none(tmp_path: Path, phantom_dataset: Path) -> None:
    from brainviewer.model.gate import attach_head, has_head
    from brainviewer.model.segmenter import load_model
    from brainviewer.training.gate_fit import GATE_FILE

    split = split_patients(open_dataset(phantom_dataset).patient_ids, val_count=2, seed=1)
    folders = []
    for name, seed in (("a", 0), ("b", 1)):
        model, prep = load_model(tiny_folder(tmp_path / "plain", name, seed))
        attach_head(model)
        prep.tumour_gate = 0.9  # the sources' thresholds do not hold for the averaged head
        folders.append(save_weights(model, tmp_path / name, prep))
        split.save(folders[-1] / "split.json")
    out, _ = write_average(folders, tmp_path / "soup", phantom_dataset, device="cpu")
    report = json.loads((out / GATE_FILE).read_text())
    loaded = Segmenter.from_folder(out, device="cpu")
    assert has_head(loaded.model) and loaded.prep.tumour_gate == report["tumour_gate"]
    assert report["validation_patients"] == sorted(split.val)
    unscored, _ = write_average(folders, tmp_path / "unscored")
    assert Segmenter.from_folder(unscored, device="cpu").prep.tumour_gate is None
