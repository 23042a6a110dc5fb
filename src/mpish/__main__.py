"""``python -m mpish``: the same as the ``mpish`` console script."""

import sys

from mpish.cli import main

if __name__ == "__main__":
    sys.exit(main())
