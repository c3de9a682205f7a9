"""`python -m coatcheck ...`: the same as the `coatcheck` command."""

import sys

from .cli import main

sys.exit(main())
