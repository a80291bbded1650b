"""`python -m ovslat`: the same as the `ovslat` command."""

import sys

from ovslat.cli import main

sys.exit(main())
