"""Write a groups CSV of the LGG patients' contributing hospitals, for per-hospital figures.

    python scripts/lgg_sites.py ../shared/data/lgg --out lgg_sites.csv
    python -m brainviewer cv-evaluate ../shared/data/lgg runs/... --groups lgg_sites.csv

A TCGA patient id (``TCGA_DU_7008_19830723``) names its tissue source site in its second field (``DU``); the
sites of the LGG set are hospitals, so a model's figure per site shows how it varies between them. Patients
whose id has no such field are left out (``cv-evaluate`` lists them under "(no group)").
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from brainviewer.data.datasets import open_dataset
from brainviewer.files import write_new

TCGA_ID = re.compile(r"^TCGA[_-](?P<site>[A-Z0-9]{2})[_-]")


def site_of(patient_id: str) -> str | None:
    """``"TCGA site DU"`` for ``TCGA_DU_7008_19830723``; ``None`` for an id that is not a TCGA one."""
    match = TCGA_ID.match(patient_id)
    return f"TCGA site {match['site']}" if match else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="the LGG dataset folder (kaggle_3m layout)")
    parser.add_argument("--out", type=Path, required=True, help="the CSV to write (patient_id,group); must not exist")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; choose another --out")
    rows = [(patient, site_of(patient)) for patient in open_dataset(args.dataset).patient_ids]
    sites = sorted({site for _, site in rows if site})
    if not sites:
        parser.error(f"no TCGA patient ids (TCGA_XX_...) in {args.dataset}: is it the LGG dataset?")
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(("patient_id", "group"))
    writer.writerows((patient, site) for patient, site in rows if site)
    write_new(args.out, table.getvalue())  # atomically: no half-written file to be reused later
    print(f"{args.out}: {sum(1 for _, s in rows if s)} patients of {len(sites)} sites ({', '.join(sites)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
