"""``python -m wsss.cli ...``, as ``python -m wsss ...``."""

import sys

from wsss.cli import main

sys.exit(main())
