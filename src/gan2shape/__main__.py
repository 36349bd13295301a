"""``python -m gan2shape``: the same as the ``gan2shape`` command (torchrun runs it so)."""

import sys

from .cli import main

sys.exit(main())
