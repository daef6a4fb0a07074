"""Where things are: the repository, the Python that runs the tests, the peer script."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEER = Path(__file__).resolve().parent / "peer.py"
PYTHON = sys.executable
