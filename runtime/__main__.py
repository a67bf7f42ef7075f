"""``python -m runtime``: see :mod:`runtime._cli`."""

import sys

from ._cli import main

sys.exit(main())
