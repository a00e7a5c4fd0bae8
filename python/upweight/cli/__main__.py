"""``python -m upweight.cli``: the ``upweight`` command."""

import sys

from . import main

sys.exit(main())
