"""``python -m ofa.cli`` (what torchrun and accelerate launch run)."""

import sys

from . import main

sys.exit(main())
