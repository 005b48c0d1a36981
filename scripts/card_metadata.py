"""Write the Hugging Face Hub metadata (YAML front matter) of weights folders' model cards from their records.

    python scripts/card_metadata.py weights/lgg-unet-resnet18 weights/figshare-unet-resnet18
    python scripts/card_metadata.py --check weights/*/       # exit 1 when a card's metadata is out of date

Only the front matter of each ``README.md`` is replaced (see brainviewer.model.hub_card for what it holds
and which result file it takes: cv_evaluation.json, evaluation/evaluation.json, else validation.json);
the rest of the card is kept as written. The new card is checked with huggingface_hub's ModelCard
before it is written (atomically).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from brainviewer.files import write_atomic
from brainviewer.model.hub_card import check_card, missing_fields, refresh_card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="weights folders (each with config.json)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a card is out of date")
    args = parser.parse_args(argv)
    stale = 0
    for folder in args.folders:
        if not (folder / "config.json").is_file():
            print(f"{folder}: not a weights folder (no config.json); skipped", file=sys.stderr)
            stale += 1
            continue
        old, new = refresh_card(folder)
        data = check_card(new)
        gaps = missing_fields(data)
        note = f" (no {', '.join(gaps)} recorded)" if gaps else ""
        if old == new:
            print(f"{folder}/README.md: up to date{note}")
            continue
        stale += 1
        if args.check:
            print(f"{folder}/README.md: metadata out of date; run python scripts/card_metadata.py {folder}")
        else:
            card = folder / "README.md"
            mode = card.stat().st_mode & 0o777 if card.exists() else 0o644
            write_atomic(card, new)
            card.chmod(mode)  # the temporary file it was written through is private (0600)
            print(f"{folder}/README.md: metadata written{note}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
