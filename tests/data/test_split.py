"""Patient splits: deterministic, disjoint, by patient."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainviewer.data.split import Split, patient_of_file, split_patients, weights_split

IDS = [f"P{i}" for i in range(1, 21)]  # P1 .. P20 (natural order differs from string order)


def test_same_seed_same_split_and_input_order_does_not_matter() -> None:
    a = split_patients(IDS, 0.25, seed=5)
    assert a == split_patients(list(reversed(IDS)), 0.25, seed=5)
    assert a != split_patients(IDS, 0.25, seed=6)


def test_every_patient_on_exactly_one_side() -> None:
    for seed in range(10):
        split = split_patients(IDS, 0.2, seed=seed)
        assert not set(split.train) & set(split.val)
        assert sorted(split.train + split.val) == sorted(IDS)
        assert len(split.val) == 4  # round(20 x 0.2)


def test_sides_are_in_natural_order() -> None:
    split = split_patients(IDS, 0.3, seed=1)
    key = lambda p: int(p[1:])  # noqa: E731
    assert split.train == sorted(split.train, key=key) and split.val == sorted(split.val, key=key)


def test_contiguous_holds_out_the_last_ids_in_natural_order() -> None:
    split = split_patients(list(reversed(IDS)), 0.15, mode="contiguous", seed=99)
    assert split.val == ["P18", "P19", "P20"]  # round(20 x 0.15) = 3; string order would give P7, P8, P9
    assert split.train == [f"P{i}" for i in range(1, 18)]
    assert split.mode == "contiguous"


def test_val_count_overrides_the_fraction() -> None:
    assert len(split_patients(IDS, 0.5, val_count=3).val) == 3
    assert split_patients(IDS, 0.5, val_count=2, mode="contiguous").val == ["P19", "P20"]
    assert len(split_patients(IDS[:3], 0.01).val) == 1  # at least one validation patient


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    split = split_patients(IDS, 0.2, seed=3)
    assert Split.load(split.save(tmp_path / "split.json")) == split


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patient_ids": ["a", "b", "a"]}, "unique"),
        ({"patient_ids": ["a"]}, "at least two"),
        ({"patient_ids": ["a", "b"], "val_count": 2}, "leave at least one"),
        ({"patient_ids": ["a", "b", "c"], "val_count": -1}, "val_count"),
        ({"patient_ids": ["a", "b", "c"], "val_fraction": 0.0}, "val_fraction"),
        ({"patient_ids": ["a", "b", "c"], "val_fraction": 1.5}, "val_fraction"),
        ({"patient_ids": ["a", "b", "c"], "mode": "stratified"}, "random' or 'contiguous"),
    ],
)
def test_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_patients(**kwargs)


def test_contiguous_blocks_hold_out_the_tail_of_each_id_range() -> None:
    # figshare-like numbering: three ranges, one per tumour type
    ids = [str(i) for i in [*range(1, 11), *range(500, 510), *range(900, 910)]]
    split = split_patients(ids, val_count=6, mode="contiguous", blocks=3)
    assert split.val == ["9", "10", "508", "509", "908", "909"]
    assert set(split.train).isdisjoint(split.val) and len(split.train) == 24


def test_contiguous_one_block_is_the_plain_tail() -> None:
    ids = [f"p{i}" for i in range(1, 11)]
    assert split_patients(ids, val_count=3, mode="contiguous").val == ["p8", "p9", "p10"]


@pytest.mark.parametrize("blocks", [0, 11])
def test_blocks_out_of_range(blocks: int) -> None:
    with pytest.raises(ValueError, match="blocks"):
        split_patients([f"p{i}" for i in range(10)], val_count=2, mode="contiguous", blocks=blocks)


def test_split_for_config_uses_the_config_fields() -> None:
    from brainviewer.data.split import split_for_config
    from brainviewer.training.config import TrainConfig

    ids = [str(i) for i in range(1, 31)]
    config = TrainConfig(split_mode="contiguous", val_patients=6, split_blocks=3)
    assert split_for_config(ids, config).val == ["9", "10", "19", "20", "29", "30"]


def test_side_of_and_the_split_of_a_weights_folder(tmp_path: Path) -> None:
    split = split_patients(IDS, 0.25, seed=3)
    assert {split.side_of(p) for p in split.val} == {"val"}
    assert {split.side_of(p) for p in split.train} == {"train"}
    assert split.side_of("someone else") is None
    assert weights_split(tmp_path) is None  # no split.json
    split.save(tmp_path / "split.json")
    assert weights_split(tmp_path) == split
    (tmp_path / "split.json").write_text("{not json")
    assert weights_split(tmp_path) is None
    (tmp_path / "split.json").write_text('{"train": []}')  # fields missing
    assert weights_split(tmp_path) is None


def test_patient_of_file_by_name() -> None:
    split = Split(train=["TCGA_CS_4943_20000902", "7"], val=["TCGA_DU_7013_19860523", "1921"], mode="x", seed=0)
    assert patient_of_file("TCGA_CS_4943_20000902_16.tif", split) == "TCGA_CS_4943_20000902"
    assert patient_of_file("TCGA_DU_7013_19860523_3_mask.tif", split) is None  # a mask is not a slice name
    assert patient_of_file("TCGA_DU_7013_19860523_3.png", split) == "TCGA_DU_7013_19860523"
    assert patient_of_file("1921.png", split) == "1921"
    assert patient_of_file("7_12.png", split) == "7"
    assert patient_of_file("scan_16.tif", split) is None
    assert patient_of_file("TCGA_CS_4943_2000090216.tif", split) is None


@pytest.mark.parametrize(("mode", "blocks"), [("random", 1), ("contiguous", 1), ("contiguous", 2)])
def test_folds_partition_the_patients_and_validate_each_once(mode: str, blocks: int) -> None:
    splits = [split_patients(IDS, mode=mode, seed=7, blocks=blocks, folds=5, fold=k) for k in range(5)]
    held_out = [p for s in splits for p in s.val]
    assert sorted(held_out) == sorted(IDS)  # every patient validated exactly once
    for k, s in enumerate(splits):
        assert (s.folds, s.fold, len(s.val)) == (5, k, 4)
        assert set(s.train).isdisjoint(s.val) and sorted(s.train + s.val) == sorted(IDS)
    assert splits[2] == split_patients(list(reversed(IDS)), mode=mode, seed=7, blocks=blocks, folds=5, fold=2)


def test_folds_ignore_the_validation_share_and_keep_their_own_layout() -> None:
    a = split_patients(IDS, val_fraction=0.5, val_count=3, seed=1, folds=4, fold=1)
    assert a == split_patients(IDS, seed=1, folds=4, fold=1) and len(a.val) == 5
    assert split_patients(IDS, seed=2, folds=4, fold=1) != a  # the seed shuffles random folds
    # contiguous, two id ranges of 10: fold 0 of 5 takes the first 2 ids of each range
    assert split_patients(IDS, mode="contiguous", blocks=2, folds=5, fold=0).val == ["P1", "P2", "P11", "P12"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"folds": 1}, "at least 2"),
        ({"folds": 5, "fold": 5}, "between 0 and folds - 1"),
        ({"folds": 5, "fold": -1}, "between 0 and folds - 1"),
        ({"folds": 21}, "into 21 folds"),
        ({"folds": 6, "mode": "contiguous", "blocks": 4}, "fewer folds or fewer blocks"),
    ],
)
def test_fold_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_patients(IDS, **kwargs)


def test_config_folds_reach_the_split_and_a_split_file_without_them_still_loads(tmp_path: Path) -> None:
    from brainviewer.data.split import split_for_config
    from brainviewer.training.config import TrainConfig

    split = split_for_config(IDS, TrainConfig(cv_folds=4, cv_fold=3, seed=9))
    assert split == split_patients(IDS, seed=9, folds=4, fold=3)
    assert Split.load(split.save(tmp_path / "s.json")) == split
    old = tmp_path / "old.json"  # written before folds existed
    old.write_text('{"train": ["a"], "val": ["b"], "mode": "random", "seed": 42}')
    assert (Split.load(old).folds, Split.load(old).fold) == (0, 0)
    with pytest.raises(ValueError, match="cv_fold must be"):
        TrainConfig(cv_folds=4, cv_fold=4)
    with pytest.raises(ValueError, match="cv_folds must be"):
        TrainConfig(cv_folds=1)


def test_reuse_split_keeps_listed_patients_on_their_side_and_splits_the_new_ones() -> None:
    from brainviewer.data.split import reuse_split

    saved = Split(train=["p1", "p2", "p3"], val=["p4"], mode="random", seed=42)
    new = [f"n{i}" for i in range(1, 11)]
    split = reuse_split(["p3", "p4", "p1", "p2", *new], saved, "base/split.json", val_fraction=0.2, seed=5)
    drawn = split_patients(new, val_fraction=0.2, seed=5)
    assert split.val == [*drawn.val, "p4"] and len(drawn.val) == 2  # natural order: n.. before p..
    assert split.train == [*drawn.train, "p1", "p2", "p3"]
    assert (split.source, split.mode, split.seed) == ("base/split.json", "random", 42)
    # patients the saved split lists but the dataset lacks are simply absent; a lone new one trains
    split = reuse_split(["p1", "p4", "n1"], saved)
    assert (split.train, split.val) == (["n1", "p1"], ["p4"])
    with pytest.raises(ValueError, match="holds out none of the dataset's 3 patients"):
        reuse_split(["p1", "p2", "n1"], saved, "base")
    # a split of another dataset keeps nothing: the plain split, not marked as reused
    assert reuse_split(new, saved, "base", val_fraction=0.2, seed=5) == split_patients(new, 0.2, seed=5)


def test_load_split_file_from_a_file_or_a_folder_and_clear_errors(tmp_path: Path) -> None:
    from brainviewer.data.split import load_split_file

    split = Split(train=["a", "b"], val=["c"], mode="random", seed=1)
    split.save(tmp_path / "split.json")
    assert load_split_file(tmp_path) == split == load_split_file(tmp_path / "split.json")
    with pytest.raises(ValueError, match=r"no split file at .*give a split\.json"):
        load_split_file(tmp_path / "nowhere")
    (tmp_path / "bad.json").write_text('{"patients": ["a"]}')
    with pytest.raises(ValueError, match=r"not a brainviewer split\.json"):
        load_split_file(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text('{"train": "a", "val": "b", "mode": "random", "seed": 1}')
    with pytest.raises(ValueError, match="must be lists of patient ids"):
        load_split_file(tmp_path / "bad2.json")


def test_config_split_file_reaches_the_split_and_excludes_folds(tmp_path: Path) -> None:
    from brainviewer.data.split import base_trained_val, split_for_config
    from brainviewer.training.config import TrainConfig

    base = split_patients(IDS, seed=42)
    base.save(tmp_path / "split.json")
    assert base_trained_val(split_for_config(IDS, TrainConfig(split_file=str(tmp_path), seed=7)), base) == []
    assert split_for_config(IDS, TrainConfig(split_file=str(tmp_path), seed=7)).val == base.val
    redrawn = split_for_config(IDS, TrainConfig(seed=7))  # another seed: some held-out patients were trained on
    assert base_trained_val(redrawn, base) == [p for p in redrawn.val if p in base.train] != []
    assert base_trained_val(redrawn, None) == []
    with pytest.raises(ValueError, match="split_file and cv_folds exclude each other"):
        TrainConfig(split_file=str(tmp_path), cv_folds=3)


def test_a_fine_tune_split_records_what_its_base_was_trained_on(tmp_path: Path) -> None:
    """Weights fine-tuned from a base have seen the base's training patients (and its base's):
    they count as trained on, wherever they turn up."""
    from brainviewer.data.split import base_trained_val, split_for_config
    from brainviewer.training.config import TrainConfig

    base = tmp_path / "base"
    base.mkdir()
    Split(train=["L1", "L2"], val=["L3"], mode="random", seed=0, base_train=["X9"]).save(base / "split.json")
    config = TrainConfig(data="unused", init_weights=str(base), val_patients=1, split_mode="contiguous")
    split = split_for_config(["L2", "M1", "M2", "M3"], config)
    assert (split.train, split.val) == (["L2", "M1", "M2"], ["M3"])
    assert split.base_train == ["L1", "X9"]  # L2 is in this split's own training side
    assert [split.side_of(p) for p in ("M1", "M3", "L1", "X9", "L3", "Z")] == [
        "train",
        "val",
        "train",
        "train",
        None,
        None,
    ]
    assert split.seen == {"L2", "M1", "M2", "L1", "X9"}
    # a validation patient the base trained on is trained on, and the run is warned about it
    overlap = Split(train=["F1"], val=["L1", "F2"], mode="random", seed=0, base_train=["L1"])
    assert overlap.side_of("L1") == "train" and overlap.side_of("F2") == "val"
    assert base_trained_val(Split(["A"], ["X9", "B"], "random", 0), Split.load(base / "split.json")) == ["X9"]
    # the record survives a save and load; older files without it still load
    assert Split.load(split.save(tmp_path / "split.json")) == split
    assert Split(train=["A"], val=["B"], mode="random", seed=0).base_train == []
    # reusing the fine-tune's split keeps the inherited patients on the training side
    from brainviewer.data.split import reuse_split

    again = reuse_split(["M1", "M2", "M3", "L1", "X9"], split, val_count=1, seed=3)
    assert "L1" in again.train and "X9" in again.train and again.val == ["M3"]
