"""``python -m aiows``: see :mod:`aiows.cli`."""

import sys

from .cli import main

sys.exit(main())
