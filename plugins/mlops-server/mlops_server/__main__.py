"""``python -m mlops_server --bundle DIR ... --port P``: the stable entry the process deployer runs."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
