"""``python -m stsdub`` is the ``stsdub`` command."""

import sys

from ._cli import main

sys.exit(main())
