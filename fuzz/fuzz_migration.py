"""Fuzz target ``migration``: see :mod:`harness` (what an input goes through) and :mod:`target` (options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from target import main

if __name__ == "__main__":
    main("migration")
