"""``python -m clot_hpo`` is ``clot-hpo``."""

from __future__ import annotations

import sys

from clot_hpo.cli import main

sys.exit(main())
