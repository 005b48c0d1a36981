"""What a running training process is doing between its progress records: training steps, validating an
epoch, or choosing the threshold and post-processing at the end; and the time left with that step in it.

``status.json``'s ETA counts only training steps and is written with them, so during a validation or the
final post-processing search it counts down to 0 and stays there. :func:`run_phase` reads the run's
records (``metrics.jsonl``) to say which step is running and how long it takes, from the last validation's
duration (the post-processing search scores the validation patients with and without the mirrored pass
over a sweep of settings: about :data:`SEARCH_VALIDATIONS` validations long, as measured on the runs here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

#: The post-processing search lasts about this many validations (41 s after a 12 s validation on the
#: figshare fold-0 run: 3.4).
SEARCH_VALIDATIONS = 3.5
#: Records are late when none came for this many of their usual intervals (plus :data:`SLACK_S`).
LATE_INTERVALS = 3.0
SLACK_S = 10.0


@dataclass(frozen=True)
class Phase:
    """What runs now (``text``, for people) and the seconds left in the whole run, or ``None`` when unknown."""

    text: str
    seconds_left: float | None


def _median(values: Sequence[float]) -> float | None:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else None


def run_phase(records: Sequence[dict], epochs: int, train_eta_s: float | None, now: float) -> Phase | None:
    """The step a running run is in when it is not training steps, or ``None`` while its training steps
    report on time (the ETA of ``status.json`` is right then).

    Args:
        records: the run's ``metrics.jsonl`` records in file order (``train``, ``val``, ``final``, ``event``).
        epochs: the run's planned epochs.
        train_eta_s: the status ETA of the training steps left (counted down to now), or ``None``.
        now: the current time (``time.time()``).
    """
    trains = [r for r in records if r.get("type") == "train" and isinstance(r.get("time"), (int, float))]
    if not trains:
        return None
    last = trains[-1]
    recent = trains[-20:]
    gaps = [b["time"] - a["time"] for a, b in pairwise(recent) if b["time"] > a["time"]]
    interval = _median(gaps) or 0.0
    vals = [r for r in records if r.get("type") == "val"]
    last_val = vals[-1] if vals else None
    since_train = now - float(last["time"])
    if since_train <= LATE_INTERVALS * interval + SLACK_S:
        return None
    val_s = float(last_val["seconds"]) if last_val and isinstance(last_val.get("seconds"), (int, float)) else None
    search_s = None if val_s is None else SEARCH_VALIDATIONS * val_s
    total = last.get("total_steps")
    steps_done = isinstance(total, (int, float)) and last.get("step", 0) >= total
    last_epoch = int(last.get("epoch", 0)) + 1 >= epochs
    validated = last_val is not None and last_val.get("step", -1) >= last.get("step", 0)
    if any(r.get("type") == "final" for r in records):
        return Phase("saving the chosen weights", None)
    if validated and (steps_done or last_epoch):
        since_val = now - float(last_val.get("time", now))
        left = None if search_s is None else max(search_s - since_val, 1.0)
        return Phase("choosing the threshold and post-processing on the validation patients", left)
    if validated:
        return Phase("saving the checkpoint and starting the next epoch", train_eta_s)
    epoch = int(last.get("epoch", 0)) + 1
    left = None if val_s is None else max(val_s - since_train, 1.0) + (train_eta_s or 0.0)
    if left is not None and (steps_done or last_epoch):
        left += search_s or 0.0
    return Phase(f"validating epoch {epoch} on the validation patients", left)
