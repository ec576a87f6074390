"""``python -m commit_train`` is the ``commit`` command."""

import sys

from commit_train.cli import main

sys.exit(main())
