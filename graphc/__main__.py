"""`python -m graphc` is the `graphc` command."""

import sys

from .cli import main

sys.exit(main())
