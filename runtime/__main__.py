"""``python -m runtime``: see :mod:`runtime.interfaces`."""

import sys

from .interfaces import main

sys.exit(main())
