"""Fine-tuning: start training runs, watch and control them, compare them and promote the best one.

Every run trains in its own process (``python -m brainviewer train``) and writes runs/<name>;
this page only reads those folders, so closing the browser does not stop a run and every
open tab shows the same runs.
"""

import streamlit as st

from brainviewer import runs, ui

st.title("Fine-tuning", anchor=False)
st.caption(
    "Train or fine-tune the tumour model on a dataset with ground truth, watch it learn, and make the best run "
    "the app's model. Each run is a separate process writing to its own folder: closing the browser or "
    "restarting the app does not stop it. One run trains per device at a time; more are queued."
)

ui.sidebar_dataset()
runs_dir = runs.runs_root()
demo = ui.finetune_demo_mode()
ui.finetune_flash()
if not demo:
    runs.process_queue(runs_dir)  # start a queued run whose device is free
run_list = runs.list_runs(runs_dir)

with st.expander("Start a run", expanded=not run_list, icon=":material/add_circle:"):
    if demo:
        st.info(
            "This is a public demo: starting, resuming, promoting and deleting runs are disabled. "
            "Run the app on your own machine to train (see the README).",
            icon=":material/lock:",
        )
    config = ui.finetune_form(runs_dir, disabled=demo)
    if config is not None and not demo:
        try:
            with st.spinner("Checking the dataset and launching…"):
                started = runs.start_run(config, runs_dir)
        except (ValueError, OSError) as err:
            st.error(f"Cannot start: {err}", icon=":material/error:")
        else:
            st.session_state["finetune_run"] = started.name
            ui.finetune_flash("success", f"{started.name} is {started.status}.")
            st.rerun()

st.subheader("Runs", anchor=False)
st.caption(f"Run folders in {runs_dir}.")
watched = ui.finetune_run_picker(run_list)
if watched is not None:
    ui.finetune_watch(watched, run_list, demo)
    with st.expander("Delete this run", icon=":material/delete:"):
        ui.finetune_delete(watched, demo)

    st.subheader("Compare and choose", anchor=False)
    ui.finetune_compare(runs_dir, run_list)
    chosen = ui.finetune_choose(run_list)
    if chosen is not None:
        evaluate, promote, average = st.tabs(["Evaluate", "Promote", "Average runs"])
        with evaluate:
            ui.finetune_evaluate(chosen)
        with promote:
            ui.finetune_promote(chosen, demo)
        with average:
            ui.finetune_average(run_list, chosen, runs_dir, demo)
