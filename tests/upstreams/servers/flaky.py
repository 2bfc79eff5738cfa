"""An upstream that is not there yet: exits at once until ``FLAKY_FILE`` exists, then serves.

    FLAKY_FILE=/tmp/ready python flaky.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    if not Path(os.environ["FLAKY_FILE"]).exists():
        print("flaky: the backend is not up yet", file=sys.stderr, flush=True)
        sys.exit(1)
    server = str(Path(__file__).with_name("lowlevel.py"))
    os.execv(sys.executable, [sys.executable, server])
