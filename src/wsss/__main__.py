"""``python -m wsss ...`` and ``torchrun [--nproc_per_node N] -m wsss train ...``."""

import sys

from wsss.cli import main

sys.exit(main())
