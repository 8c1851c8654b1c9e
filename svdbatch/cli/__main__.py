"""``python -m svdbatch.cli``: the same as the ``svdbatch`` command."""

import sys

from svdbatch.cli import main

sys.exit(main())
