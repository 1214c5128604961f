"""Run by the forkserver test as a forked child: writes its argument file and exits 0."""

import sys
from pathlib import Path

Path(sys.argv[1]).write_text("forked")
