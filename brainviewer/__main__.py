import sys

from brainviewer.cli import main

sys.exit(main())
