"""The Fine-tuning page's watched run: the run picker, and a fragment that re-reads the run from disk
while runs are active, with its status, progress, Stop / Resume / Kill, curves, log and sample predictions.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import streamlit as st

from brainviewer import runs as runs_lib
from brainviewer.data.datasets import Dataset
from brainviewer.model.segmenter import Segmenter
from brainviewer.runs.phase import run_phase
from brainviewer.ui.common import metric_cards
from brainviewer.ui.finetune import finetune_flash
from brainviewer.ui.server_files import demo_mode
from brainviewer.ui.sidebar import load_model_state
from brainviewer.ui.state import FINETUNE_RUN_KEY, state_index
from brainviewer.views import figures

#: Seconds between refreshes of the watched run while a run is active or queued.
FINETUNE_REFRESH_S = 3
#: Seconds between looks for runs started or ended elsewhere (another tab, the command line).
FINETUNE_IDLE_REFRESH_S = 15


STATUS_TEXT = {
    runs_lib.RUNNING: ":blue[running]",
    runs_lib.QUEUED: ":violet[queued]",
    runs_lib.STOPPED: ":orange[stopped]",
    runs_lib.FINISHED: ":green[finished]",
    runs_lib.EARLY_STOPPED: ":green[finished early (no better validation)]",
    runs_lib.FAILED: ":red[failed]",
    runs_lib.DEAD: ":red[dead (process gone)]",
    runs_lib.UNKNOWN: ":gray[unknown]",
}


def finetune_run_picker(run_list: list[runs_lib.RunInfo]) -> runs_lib.RunInfo | None:
    """Selectbox of runs, newest first (key ``finetune_run``); the chosen run or ``None`` without runs."""
    if not run_list:
        st.info("No runs yet. Start one above; it trains in its own process and shows up here.")
        return None
    names = [r.name for r in run_list]
    status = {r.name: r.status for r in run_list}
    active = next((i for i, r in enumerate(run_list) if r.status == runs_lib.RUNNING), 0)
    name = st.selectbox(
        "Run",
        names,
        index=state_index(FINETUNE_RUN_KEY, names, active),
        help="Newest first; the page opens on the run that is training.",
        key=FINETUNE_RUN_KEY,
        format_func=lambda n: f"{n} · {status.get(n, '?')}",
    )
    return run_list[names.index(name)]


def _runs_signature(run_list: list[runs_lib.RunInfo]) -> tuple:
    return tuple((r.name, r.status) for r in run_list)


def finetune_watch(info: runs_lib.RunInfo, run_list: list[runs_lib.RunInfo], demo: bool) -> None:
    """The watched run: status, progress, controls, curves, log and sample predictions.

    A fragment that re-reads the run from disk every :data:`FINETUNE_REFRESH_S` seconds while any
    run is active or queued; when a run starts, ends or appears it reruns the whole page.
    """
    active = any(r.status in (runs_lib.RUNNING, runs_lib.QUEUED) for r in run_list)
    every = FINETUNE_REFRESH_S if active else FINETUNE_IDLE_REFRESH_S
    st.fragment(_finetune_watch_body, run_every=every)(str(info.path), _runs_signature(run_list), demo)


def _finetune_watch_body(run_path: str, signature: tuple, demo: bool) -> None:
    run_dir = Path(run_path)
    if not demo:
        runs_lib.process_queue(run_dir.parent)  # start a queued run whose device is free
    run_list = runs_lib.list_runs(run_dir.parent)
    if _runs_signature(run_list) != signature:
        st.rerun()  # a run started, ended or appeared: refresh the whole page
    info = next((r for r in run_list if r.path == run_dir), None)
    if info is None:
        st.rerun()
    finetune_status(info, run_list)
    finetune_controls(info, demo)
    finetune_curves(info)
    left, right = st.columns([3, 2])
    with left:
        finetune_samples(info)
    with right:
        st.markdown("**Log** (newest line first)")
        lines = runs_lib.tail_log(info.path, 14)
        # newest first: a code block cannot follow its end, so the latest line is where the eye starts
        st.code("\n".join(reversed(lines)) if lines else "(no log yet)", language=None, height=320, wrap_lines=True)


def finetune_status(info: runs_lib.RunInfo, run_list: list[runs_lib.RunInfo]) -> None:
    """Status line, progress bar with ETA, and metric cards of one run."""
    fmt = runs_lib.format_duration
    base = Path(info.base_weights).name if info.config.init_weights else info.base_weights
    data = Path(info.dataset).name if demo_mode() else info.dataset  # a demo names no server path
    st.markdown(f"**{info.name}** · {STATUS_TEXT.get(info.status, info.status)}")
    st.caption(
        f"base {base} · data {data} · {info.config.arch} {info.config.encoder} · device {info.device} · "
        f"created {datetime.fromtimestamp(info.created):%Y-%m-%d %H:%M}"
    )
    epoch_text = f"epoch {min(info.epoch + 1, info.epochs)}/{info.epochs}"
    steps = f"step {info.global_step:,}/{info.total_steps:,}" if info.total_steps else f"step {info.global_step:,}"
    if info.is_starting:
        st.progress(info.progress, text="Starting: loading the data and the model…")
    elif info.status == runs_lib.RUNNING:
        phase = run_phase(runs_lib.read_records(info.path), info.epochs, info.eta_s, time.time())
        if phase is None:  # training steps, on time: the status ETA holds
            st.progress(info.progress, text=f"{steps} · {epoch_text} · ETA {fmt(info.eta_s)}")
        else:  # validating or choosing the post-processing: the status ETA would read 0s
            left = f"about {fmt(phase.seconds_left)} left" if phase.seconds_left is not None else "time left unknown"
            st.progress(info.progress, text=f"{steps} · {epoch_text} · now {phase.text} · {left}")
    elif info.status == runs_lib.QUEUED:
        queue = [
            r.name
            for r in sorted(run_list, key=lambda r: (r.queued_at or 0.0, r.name))
            if r.status == runs_lib.QUEUED and r.device == info.device
        ]
        busy = [r.name for r in run_list if r.status == runs_lib.RUNNING and r.device == info.device]
        st.info(
            f"Queued ({queue.index(info.name) + 1} of {len(queue)} on {info.device}): it starts when "
            f"{', '.join(busy) or 'the active run'} ends. Queued runs start while this page is open or, "
            "without it, through the background queue runner.",
            icon=":material/schedule:",
        )
    else:
        st.progress(info.progress, text=f"{steps} · {info.status}")
    if info.status == runs_lib.FAILED:
        st.error(f"Failed: {info.error or 'see the log'}. Resume continues from the last checkpoint.")
    elif info.status == runs_lib.DEAD:
        st.warning(
            "The training process is gone (killed, or the machine restarted) without writing a final status. "
            f"Resume continues from its last checkpoint{'' if info.has_checkpoint else ' (none yet: from the start)'}."
        )
    elif info.status == runs_lib.UNKNOWN:
        st.warning(
            f"Its status was written on another machine ({info.host}) or it has not written one yet; "
            "this page cannot tell whether it is still training."
        )
    elif info.status == runs_lib.STOPPED:
        st.info("Stopped. Resume continues from its last checkpoint.", icon=":material/pause_circle:")
    cards = [
        (
            "Best validation Dice",
            "n/a" if info.best_dice is None else f"{info.best_dice:.3f}",
            "Mean per-patient volume Dice on the validation patients"
            + ("" if info.best_epoch is None else f" (epoch {info.best_epoch + 1})"),
        ),
        ("Images / s", "n/a" if info.images_per_s is None else f"{info.images_per_s:.1f}", "Recent throughput."),
        ("Training time", fmt(info.duration_s), "All launches together."),
        ("ETA", eta_text(info), "Estimated time left, validation and the post-processing search included."),
    ]
    metric_cards(cards)


def eta_text(info: runs_lib.RunInfo) -> str:
    """The ETA card: the training steps' ETA, or, while a validation or the post-processing search runs
    (when that ETA has counted down to 0), the estimate of :func:`~brainviewer.runs.phase.run_phase`."""
    if info.status != runs_lib.RUNNING:
        return "n/a"
    phase = run_phase(runs_lib.read_records(info.path), info.epochs, info.eta_s, time.time())
    if phase is None:
        return runs_lib.format_duration(info.eta_s)
    return "unknown" if phase.seconds_left is None else runs_lib.format_duration(phase.seconds_left)


def finetune_controls(info: runs_lib.RunInfo, demo: bool) -> None:
    """Stop / Resume / Kill buttons; each acts, then reruns the page."""
    can_stop = info.status in (runs_lib.RUNNING, runs_lib.QUEUED, runs_lib.UNKNOWN)
    can_resume = info.resumable or info.status == runs_lib.UNKNOWN
    with st.container(horizontal=True, gap="small"):
        stop = st.button(
            "Stop",
            key="finetune_stop",
            icon=":material/stop:",
            disabled=demo or not can_stop,
            help="Graceful: the run saves a checkpoint at its next step and stops (a queued run leaves the queue).",
        )
        resume = st.button(
            "Resume",
            key="finetune_resume",
            icon=":material/play_arrow:",
            disabled=demo or not can_resume,
            help="Continue a stopped, failed or dead run from its last checkpoint (queued if the device is busy).",
        )
        kill = st.button(
            "Kill",
            key="finetune_kill",
            icon=":material/dangerous:",
            disabled=demo or info.status != runs_lib.RUNNING,
            help="For a stuck run: SIGTERM (it checkpoints and stops), then SIGKILL after 10 s.",
        )
    force = False
    if info.status == runs_lib.UNKNOWN:
        force = st.checkbox("Nothing trains this run any more (resume anyway)", key="finetune_force")
    try:
        if stop:
            runs_lib.stop_run(info.path)
            finetune_flash("info", f"Asked {info.name} to stop; it saves a checkpoint at its next step.")
        elif resume:
            if info.status == runs_lib.UNKNOWN and not force:
                st.warning("Tick the box first: resuming a run that still trains elsewhere would corrupt it.")
                return
            resumed = runs_lib.resume_run(info.path, force=force)
            finetune_flash("success", f"{info.name} is {resumed.status}.")
        elif kill:
            with st.spinner(f"Ending {info.name}…"):
                killed = runs_lib.kill_run(info.path)
            finetune_flash("warning", f"{info.name} is {killed.status}.")
        else:
            return
    except (ValueError, OSError) as err:
        st.error(str(err), icon=":material/error:")
        return
    st.rerun()


def finetune_curves(info: runs_lib.RunInfo) -> None:
    """Training loss against the step and validation Dice against the epoch, side by side."""
    train_rows, val_rows = runs_lib.read_metrics(info.path)
    if not train_rows and not val_rows:
        st.caption("Curves appear after the first logged steps.")
        return
    per_patient = st.toggle("Per-patient validation lines", key="finetune_per_patient")
    left, right = st.columns(2)
    left.plotly_chart(figures.loss_figure(train_rows), key="finetune_loss_chart")
    right.plotly_chart(figures.dice_figure(val_rows, per_patient), key="finetune_dice_chart")


@st.cache_resource(max_entries=8, show_spinner=False)
def _validation_samples(run_dir: str, split_mtime_ns: int, n: int) -> tuple:
    return runs_lib.validation_records(run_dir, n)


@st.cache_data(max_entries=64, show_spinner=False)
def _sample_picture(model_id: str, image_path: str, _segmenter: Segmenter, _dataset: Dataset, _record) -> tuple:
    """(outlined picture, Dice or None) of one validation slice under one model version, predicted alone as the
    Review page does: a slice the weights' tumour-present gate calls tumour-free shows no mask."""
    from brainviewer.evaluation.metrics import dice
    from brainviewer.views.patient import outlined

    image = _dataset.load_image(_record)
    truth = _dataset.load_mask(_record, shape=image.shape[:2])
    (probs,), (presence,) = _segmenter.predict_slices([image])
    pred = _segmenter.mask_from_probs(probs, presence=presence)
    scored = truth is not None and (truth.any() or pred.any())  # as on Review: no Dice without tumour in either
    return outlined(image, truth, pred), (dice(pred, truth) if scored else None)


def finetune_samples(info: runs_lib.RunInfo, n: int = 3) -> None:
    """Predictions of the run's current best weights on ``n`` validation slices (truth red, prediction green)."""
    weights = "best weights so far" if info.status == runs_lib.RUNNING else "best weights"
    st.markdown(f"**Sample validation predictions** ({weights}; truth red, prediction green)")
    if not info.has_best:
        st.caption("They appear once the first validation has saved best weights.")
        return
    model = load_model_state(str(info.best_dir))
    if model.segmenter is None or model.model_id is None:
        st.caption(f"The best weights are being written; trying again at the next refresh. ({model.message})")
        return
    try:
        split = info.path / runs_lib.SPLIT_FILE
        dataset, records = _validation_samples(str(info.path), split.stat().st_mtime_ns, n)
        pictures = [_sample_picture(model.model_id, str(r.image_path), model.segmenter, dataset, r) for r in records]
    except Exception as err:  # data moved or unreadable: say so, keep the page up
        st.caption(f"No sample predictions: {type(err).__name__}: {err}")
        return
    for column, record, (picture, score) in zip(st.columns(max(1, len(records))), records, pictures, strict=False):
        dice_text = "" if score is None else f" · Dice {score:.3f}"
        number = dataset.patients[record.patient_id].index(record) + 1  # words, so a narrow caption wraps between them
        column.image(picture, caption=f"{record.patient_id} slice {number}{dice_text}", width="stretch")
