"""``python -m aijobs`` is the ``aijobs`` command."""

import sys

from aijobs.cli import main

sys.exit(main())
