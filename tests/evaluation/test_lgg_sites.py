"""scripts/lgg_sites.py: the LGG patients' hospitals (TCGA tissue source sites) as a groups CSV."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from brainviewer.evaluation.groups import read_groups

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lgg_sites():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import lgg_sites
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return lgg_sites


def test_the_site_is_the_second_field_of_a_tcga_id(lgg_sites) -> None:
    assert lgg_sites.site_of("TCGA_DU_7008_19830723") == "TCGA site DU"
    assert lgg_sites.site_of("TCGA-HT-7692") == "TCGA site HT"
    assert lgg_sites.site_of("P1") is None and lgg_sites.site_of("TCGAXDU_1") is None


def test_the_csv_of_the_real_patients_reads_as_groups(lgg_sites, lgg_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "sites.csv"
    assert lgg_sites.main([str(lgg_root), "--out", str(out)]) == 0
    groups = read_groups(out)
    assert len(groups) == 88  # ../shared/data/README.md
    assert set(groups.values()) == {"TCGA site CS", "TCGA site DU", "TCGA site FG", "TCGA site HT"}
    assert groups["TCGA_DU_7008_19830723"] == "TCGA site DU"
    with pytest.raises(SystemExit):  # never overwrites
        lgg_sites.main([str(lgg_root), "--out", str(out)])


def test_a_dataset_without_tcga_ids_is_refused(lgg_sites, phantom_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        lgg_sites.main([str(phantom_dataset), "--out", str(tmp_path / "sites.csv")])
    assert not (tmp_path / "sites.csv").exists()
