"""``python -m srkit`` (and ``torchrun -m srkit train ...``) runs the command line."""

import sys

from srkit.cli import main

sys.exit(main())
