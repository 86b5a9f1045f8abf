"""`python -m mecorch.cli`: the same as the `mecorch` command."""

import sys

from mecorch.cli import main

sys.exit(main())
