"""`python -m bertsent`: the same command line as `bertsent`, for launchers that start modules (torchrun -m,
accelerate launch -m)."""

import sys

from bertsent.cli import main

sys.exit(main())
