"""``python -m proxy.lab``: the same as ``sipcalling-lab``."""

import sys

from proxy.lab.runner import main

sys.exit(main())
