"""The Fine-tuning page's results: compare runs, and evaluate, promote, average or delete one.

Promoting or averaging writes a new folder under weights/ and can make it the app's model;
deleting moves a run to runs/.trash. All of them are disabled in demo mode.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from brainviewer import runs as runs_lib
from brainviewer.data.split import Split
from brainviewer.model.weights import WEIGHTS_ENV, default_weights_spec, weights_root
from brainviewer.runs import averages as average_jobs
from brainviewer.runs.promote import promoted_name
from brainviewer.ui.common import evaluate_with_progress, metric_cards
from brainviewer.ui.finetune import finetune_flash
from brainviewer.ui.server_files import demo_mode
from brainviewer.ui.sidebar import choose_named_dataset, dataset_path, load_dataset, load_model_state
from brainviewer.ui.state import (
    FINETUNE_BASE_SCORE_KEY,
    FINETUNE_CHOOSE_KEY,
    FINETUNE_DELETE_CONFIRM_KEY,
    FINETUNE_EVAL_KEY,
    MODEL_CHOICE_KEY,
    MODEL_SPEC_KEY,
    state_index,
)
from brainviewer.views import figures

#: Under the runs table: why a run's two Dice columns differ.
FINAL_DICE_NOTE = (
    "Best vs final Dice: *best* is the highest validation Dice during training, at the training threshold; "
    "*final* re-scores those best weights after the threshold and post-processing were chosen at the end, "
    "so the two differ (final is blank until the run finishes)."
)


def finetune_compare(runs_dir: Path, run_list: list[runs_lib.RunInfo]) -> None:
    """The runs table and their validation curves in one figure; re-read from disk every 10 s
    while a run is active or queued."""
    active = any(r.status in (runs_lib.RUNNING, runs_lib.QUEUED) for r in run_list)
    st.fragment(_finetune_compare_body, run_every=10 if active else None)(str(runs_dir))


def _finetune_compare_body(runs_dir: str) -> None:
    run_list = runs_lib.list_runs(runs_dir)
    table = runs_lib.compare_runs(run_list).drop(columns=["duration_s"])
    if demo_mode() and "dataset" in table:  # a demo names no server path
        table["dataset"] = [Path(str(path)).name for path in table["dataset"]]
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "best Dice": st.column_config.NumberColumn(format="%.3f", help="Best validation Dice while training."),
            "final Dice": st.column_config.NumberColumn(
                format="%.3f", help="The best weights at the threshold chosen when the run finished."
            ),
            "lr": st.column_config.NumberColumn(format="%.1e"),
        },
        key="finetune_table",
    )
    st.caption(FINAL_DICE_NOTE)
    with_curves = [r.name for r in run_list if runs_lib.read_metrics(r.path)[1]]
    if not with_curves:
        return
    chosen = st.multiselect("Validation curves of", with_curves, default=with_curves[:5], key="finetune_compare_runs")
    by_name = {r.name: r for r in run_list}
    curves = {name: runs_lib.read_metrics(by_name[name].path)[1] for name in chosen}
    st.plotly_chart(figures.compare_figure(curves), key="finetune_compare_chart")


def finetune_choose(run_list: list[runs_lib.RunInfo]) -> runs_lib.RunInfo | None:
    """Selectbox of the runs that have best weights (key ``finetune_choose``)."""
    with_best = [r for r in run_list if r.has_best]
    if not with_best:
        st.caption("Runs appear here once they have best weights (after their first validation).")
        return None
    names = [r.name for r in with_best]
    name = st.selectbox(
        "Run to evaluate or promote", names, index=state_index(FINETUNE_CHOOSE_KEY, names), key=FINETUNE_CHOOSE_KEY
    )
    return with_best[names.index(name)]


def finetune_evaluate(info: runs_lib.RunInfo) -> None:
    """Evaluate the run's best weights on a dataset (per patient, cached, with a progress bar)."""
    c1, c2 = st.columns([3, 2])
    demo = demo_mode()
    if demo:  # only the datasets the operator offers
        data = choose_named_dataset("Dataset", "finetune_eval_data_choice", c1)[1]
    else:
        data = c1.text_input("Dataset", value=dataset_path() or info.dataset, key="finetune_eval_data")
    scope = c2.radio(
        "Patients",
        ("The run's validation patients", "All patients"),
        key="finetune_eval_scope",
        horizontal=True,
        help="Validation patients are the fair test of a run; the others were trained on (if it is the same data).",
    )
    if st.button("Evaluate", key="finetune_eval_button", icon=":material/analytics:"):
        st.session_state[FINETUNE_EVAL_KEY] = {"run": info.name, "data": data.strip(), "scope": scope}
    request = st.session_state.get(FINETUNE_EVAL_KEY)
    if not request or request["run"] != info.name:
        return
    if not request["data"]:
        st.info("Choose a dataset to evaluate the run on.", icon=":material/info:")
        return
    dataset, error = load_dataset(request["data"], confine=demo)
    if dataset is None:
        st.error(error)
        return
    if request["scope"] != "All patients":
        val = set(Split.load(info.path / runs_lib.SPLIT_FILE).val)
        subset = dataset.subset(val)
        if len(subset):
            dataset = subset
        else:
            st.info("None of the run's validation patients are in this dataset: evaluating all its patients.")
    model = load_model_state(str(info.best_dir))
    if model.segmenter is None:
        st.error(model.message)
        return
    key = f"{dataset.kind}:{Path(dataset.root).resolve()}:{request['scope']}"
    result = evaluate_with_progress(
        model, dataset, key, model.threshold, model.min_component_px, model.keep_largest, model.volume_keep_largest
    )
    if result is None:
        return
    report = result.report
    cards = [
        ("Mean Dice", f"{report.mean_dice:.3f}", "Mean over patients of the per-volume Dice."),
        ("Median Dice", f"{report.median_dice:.3f}", None),
        ("Micro Dice", f"{report.micro_dice:.3f}", "All pixels of all patients pooled."),
        (
            "FP slices",
            "n/a" if report.fp_rate is None else f"{report.fp_rate:.3f}",
            "Share of tumour-free slices with a predicted tumour.",
        ),
    ]
    metric_cards(cards)
    st.caption(
        f"{len(report.patients)} patient{'s' if len(report.patients) != 1 else ''} of {Path(request['data']).name} · "
        f"threshold {report.threshold:.2f} "
        f"(the run's choice on its validation data)"
    )
    st.plotly_chart(figures.patient_dice_figure(report.patients, report.mean_dice), key="finetune_eval_chart")


def finetune_promote(info: runs_lib.RunInfo, demo: bool) -> None:
    """Promote the run's best weights to weights/<name> and make them the app's model."""
    active = runs_lib.active_weights()
    current = Path(default_weights_spec())
    st.caption(
        f"The app's model now: **{current.name}**"
        + (f" (weights/ACTIVE names {active})" if active else "")
        + ". Promoting copies this run's best weights to a new folder under weights/ and makes it the model "
        "every page uses; the previous model stays available in its own folder."
    )
    if info.status == runs_lib.RUNNING:
        st.caption("This run is still training: its best weights so far are promoted.")
    finetune_base_score(info)
    name = st.text_input(
        "Name of the promoted model",
        value=promoted_name(info.path),
        key=f"finetune_promote_name_{info.name}",
        max_chars=100,
        disabled=demo,
        help="Its folder under weights/ and its name in the sidebar. By default the base model and today's date; "
        "a taken name gets -2, -3, … (nothing is overwritten).",
    )
    if st.button("Promote", key="finetune_promote", type="primary", icon=":material/upgrade:", disabled=demo):
        try:
            folder = runs_lib.promote_run(info.path, name=name.strip() or None)
        except (ValueError, OSError) as err:
            st.error(f"Could not promote: {err}", icon=":material/error:")
            return
        finetune_flash("success", f"weights/{folder.name} is now the app's model (previous: {current.name}).")
        if os.environ.get(WEIGHTS_ENV):
            finetune_flash(
                "warning",
                f"{WEIGHTS_ENV} is set ({os.environ[WEIGHTS_ENV]}) and overrides weights/ACTIVE: "
                "unset it to use the promoted model by default.",
            )
        for key in (MODEL_CHOICE_KEY, MODEL_SPEC_KEY):  # the sidebar picks the new default, on every page
            st.session_state.pop(key, None)
        st.rerun()


def finetune_base_score(info: runs_lib.RunInfo) -> None:
    """The run's final Dice beside its base model's on the same validation patients, so a gain can be told
    from a loss. The run folder does not record the base model's score: it is computed on request (a button),
    once per server (patient results are kept)."""
    if not info.config.init_weights:
        st.caption("Trained from scratch: there is no base model to compare with.")
        return
    base = Path(info.config.init_weights)
    base_name = base.name
    run_text = "n/a (until the run finishes)" if info.final_dice is None else f"{info.final_dice:.3f}"
    requested = st.session_state.setdefault(FINETUNE_BASE_SCORE_KEY, set())
    if info.name not in requested:
        left, right = st.columns([3, 2], vertical_alignment="center")
        left.caption(
            f"This run: mean Dice **{run_text}** on its validation patients. Is that a gain over its base model "
            f"{base_name}? Score the base model on the same patients to see."
        )
        if right.button("Score the base model", key="finetune_base_score", icon=":material/compare_arrows:"):
            requested.add(info.name)
            st.rerun()
        return
    dataset, error = load_dataset(info.dataset)
    if dataset is None:
        st.error(f"The run's dataset cannot be read to score the base model: {error}")
        return
    val = dataset.subset(set(Split.load(info.path / runs_lib.SPLIT_FILE).val))
    model = load_model_state(str(base))
    if model.segmenter is None or not len(val):
        st.error(model.message or "None of the run's validation patients are in its dataset.")
        return
    key = f"{dataset.kind}:{Path(dataset.root).resolve()}:val-of-{info.name}"
    result = evaluate_with_progress(
        model, val, key, model.threshold, model.min_component_px, model.keep_largest, model.volume_keep_largest
    )
    if result is None:
        return
    base_dice = result.report.mean_dice
    delta = None if info.final_dice is None else info.final_dice - base_dice
    metric_cards(
        [
            ("This run", run_text, "Mean per-patient Dice of the run's best weights, at its chosen settings."),
            (f"Base: {base_name}", f"{base_dice:.3f}", "The base model, with its own settings, same patients."),
            ("Gain", "n/a" if delta is None else f"{delta:+.3f}", "This run minus the base model."),
        ]
    )
    st.caption(f"Mean per-patient Dice on the run's {len(val.patient_ids)} validation patients.")


def finetune_average(run_list: list[runs_lib.RunInfo], chosen: runs_lib.RunInfo, runs_dir: Path, demo: bool) -> None:
    """Average the best weights of several runs into a new weights folder, in its own process."""
    st.caption(
        'The weight average of runs fine-tuned from one model (a "model soup") often scores at least as well '
        "as the best of them, at the cost of one model. It runs as its own process and writes a new folder "
        "under weights/; nothing existing is overwritten."
    )
    by_name = {r.name: r for r in run_list if r.has_best}
    picked = st.multiselect("Runs to average", list(by_name), default=[chosen.name], key="finetune_average_runs")
    folders = [str(by_name[name].best_dir) for name in picked if name in by_name]
    data = average_jobs.default_data(folders) if folders else ""
    c1, c2 = st.columns([2, 3])
    placeholder = f"avg-{picked[0]}" if picked else "avg"
    name = c1.text_input("New weights folder name", key="finetune_average_name", placeholder=placeholder, disabled=demo)
    score = c2.checkbox(
        "Choose the threshold on the runs' validation patients",
        value=True,
        key="finetune_average_score",
        disabled=not data,
        help=(
            f"Scores the average on {Path(data).name} (a few minutes on a CPU), as at the end of a run."
            if data
            else "The runs were trained on different datasets: the first run's threshold is kept."
        ),
    )
    if st.button(
        "Average",
        key="finetune_average_start",
        icon=":material/merge:",
        disabled=demo or len(folders) < 2,
        help="Choose at least two runs." if len(folders) < 2 else None,
    ):
        try:
            job = average_jobs.start_average(
                folders, name.strip() or placeholder, data if score and data else None, runs_dir
            )
        except (ValueError, OSError) as err:
            st.error(f"Cannot average: {err}", icon=":material/error:")
        else:
            st.success(f"Averaging {len(folders)} runs into weights/{job.name}.", icon=":material/merge:")
    jobs = average_jobs.list_averages(runs_dir)
    if jobs:
        running = any(job.status == average_jobs.RUNNING for job in jobs)
        st.fragment(_finetune_average_jobs, run_every=5 if running else None)(str(runs_dir), demo)


def _finetune_average_jobs(runs_dir: str, demo: bool) -> None:
    for job in average_jobs.list_averages(runs_dir)[:5]:
        label = f"weights/{job.name} (average of {len(job.sources)})"
        if job.status == average_jobs.RUNNING:
            st.info(f"{label}: running…", icon=":material/hourglass_top:")
            with st.expander("Log"):
                lines = runs_lib.tail_log(job.log.parent, 8, job.log.name)
                st.code("\n".join(lines) or "(empty)", language=None, wrap_lines=True)
        elif job.status == average_jobs.FAILED:
            st.error(f"{label} failed: {job.error}", icon=":material/error:")
        else:
            summary = job.summary
            result = (
                f"mean Dice {summary['mean_volume_dice']:.3f} on {summary['patients']} validation patients"
                if summary
                else "done (not scored)"
            )
            st.success(f"{label}: {result}", icon=":material/check_circle:")
            if job.out.parent.resolve() == weights_root().resolve() and st.button(
                "Use as the app's model", key=f"finetune_average_use_{job.name}", disabled=demo
            ):
                try:
                    runs_lib.set_active(job.name)
                except (ValueError, OSError) as err:
                    st.error(f"Could not use it: {err}", icon=":material/error:")
                else:
                    finetune_flash("success", f"weights/{job.name} is now the app's model.")
                    st.session_state.pop(MODEL_CHOICE_KEY, None)
                    st.session_state.pop(MODEL_SPEC_KEY, None)  # else the session's kept choice comes back
                    st.rerun(scope="app")


def _delete_run(path: str, name: str) -> None:
    try:
        moved = runs_lib.delete_run(path, st.session_state.get(FINETUNE_DELETE_CONFIRM_KEY, ""))
    except (ValueError, OSError) as err:
        finetune_flash("error", str(err))
        return
    st.session_state[FINETUNE_DELETE_CONFIRM_KEY] = ""
    finetune_flash("success", f"Moved {name} to {moved} (empty the .trash folder by hand to free the space).")


def finetune_delete(info: runs_lib.RunInfo, demo: bool) -> None:
    """Delete (move to runs/.trash) after the user types the run's name."""
    typed = st.text_input(f"Type **{info.name}** to delete this run", key=FINETUNE_DELETE_CONFIRM_KEY, disabled=demo)
    st.button(
        "Delete",
        key="finetune_delete",
        icon=":material/delete:",
        disabled=demo or typed != info.name or info.status in (runs_lib.RUNNING, runs_lib.UNKNOWN),
        on_click=_delete_run,
        args=(str(info.path), info.name),
        help="Moves the run folder to runs/.trash; stop a running run first.",
    )
