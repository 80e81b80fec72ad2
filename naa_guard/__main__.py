"""``python -m naa_guard ...`` runs the naa-guard command (also under ``torchrun -m naa_guard ...``)."""

from __future__ import annotations

import sys

from naa_guard.cli import main

sys.exit(main())
