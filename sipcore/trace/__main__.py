"""``python -m sipcore.trace`` is ``sipcalling-trace``."""

import sys

from sipcore.trace.cli import main

sys.exit(main())
