"""``python -m anomalib_adaclip`` runs the ``anomalib-adaclip`` command."""

import sys

from .cli import main

sys.exit(main())
