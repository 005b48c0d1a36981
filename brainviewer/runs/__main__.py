"""``python -m brainviewer.runs queue-runner RUNS_DIR``: see :func:`brainviewer.runs.main`."""

import sys

from brainviewer.runs import main

sys.exit(main())
