"""Publish a training run's best weights into weights/<name> with a fresh model card.

    python scripts/publish_weights.py RUN_DIR NAME [--base-note TEXT]

The copy is atomic and never overwrites an existing folder (brainviewer.runs.promote_run); the
model card is rendered again from the run's final state (epochs run, training time, the
validation metrics at the chosen threshold), so it describes the weights as published.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from brainviewer.model.hub_card import folder_card_data, with_front_matter
from brainviewer.model.modelcard import render_card
from brainviewer.model.preprocessing import Preprocessing
from brainviewer.runs import promote_run
from brainviewer.runs.layout import CHECKPOINT
from brainviewer.training.config import TrainConfig
from brainviewer.training.records import RunState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--base-note", default="", help="a sentence about the base model, added to the card")
    args = parser.parse_args()

    config = TrainConfig.load(args.run_dir / "config.json")
    state = RunState(**torch.load(args.run_dir / CHECKPOINT, map_location="cpu", weights_only=True)["state"])
    folder = promote_run(args.run_dir, args.name, activate=False)
    summary = json.loads((folder / "validation.json").read_text())
    channel_names = Preprocessing.load(folder).channel_names  # says whether the weights read grayscale scans
    card = render_card(config, state, summary, args.run_dir, channel_names)
    if args.base_note:
        card = card.replace("## Data\n", f"## Data\n- {args.base_note}\n", 1)
    card = with_front_matter(card, folder_card_data(folder))  # the Hub metadata of the folder as published
    (folder / "README.md").write_text(card)
    print(folder)


if __name__ == "__main__":
    main()
