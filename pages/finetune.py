"""Fine-tuning: start training runs, watch and control them, compare them and promote the best one.

Every run trains in its own process (``python -m brainviewer train``) and writes runs/<name>;
this page only reads those folders, so closing the browser does not stop a run and every
open tab shows the same runs.
"""

import streamlit as st

from brainviewer import runs
from brainviewer.ui.finetune import finetune_demo_mode, finetune_flash, finetune_start
from brainviewer.ui.finetune_corrections import corrections_compare, corrections_start
from brainviewer.ui.finetune_results import (
    finetune_average,
    finetune_choose,
    finetune_compare,
    finetune_delete,
    finetune_evaluate,
    finetune_promote,
)
from brainviewer.ui.finetune_watch import finetune_run_picker, finetune_watch
from brainviewer.ui.sidebar import sidebar_dataset, sidebar_model

st.title("Fine-tuning", anchor=False)
st.caption(
    "Train or fine-tune the tumour model on a dataset with ground truth, watch it learn, and make the best run "
    "the app's model. Each run is a separate process writing to its own folder: closing the browser or "
    "restarting the app does not stop it. One run trains per device at a time; more are queued."
)

sidebar_model()  # the app's model, as on every page (the one a promotion replaces)
sidebar_dataset()
runs_dir = runs.runs_root()
demo = finetune_demo_mode()
finetune_flash()
if not demo:
    runs.process_queue(runs_dir)  # start a queued run whose device is free
run_list = runs.list_runs(runs_dir)
finetune_start(runs_dir, run_list, demo)
corrections_start(runs_dir, demo)

st.subheader("Runs", anchor=False)
st.caption("The runs of this demo." if demo else f"Run folders in {runs_dir}.")
watched = finetune_run_picker(run_list)
if watched is not None:
    finetune_watch(watched, run_list, demo)
    with st.expander("Delete this run", icon=":material/delete:"):
        finetune_delete(watched, demo)

    st.subheader("Compare and choose", anchor=False)
    finetune_compare(runs_dir, run_list)
    chosen = finetune_choose(run_list)
    if chosen is not None:
        evaluate, promote, average = st.tabs(["Evaluate", "Promote", "Average runs"])
        with evaluate:
            corrections_compare(chosen)
            finetune_evaluate(chosen)
        with promote:
            finetune_promote(chosen, demo)
        with average:
            finetune_average(run_list, chosen, runs_dir, demo)
