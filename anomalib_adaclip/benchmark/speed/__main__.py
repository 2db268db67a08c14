"""``python -m anomalib_adaclip.benchmark.speed``: the speed benchmark's command line."""

import sys

from anomalib_adaclip.benchmark.speed.cli import main

sys.exit(main())
