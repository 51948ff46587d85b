"""Coverage-guided fuzzing of the message parser with atheris (libFuzzer).

    .venv/bin/python fuzz/fuzz_message.py -max_total_time=60 -dict=fuzz/sip.dict \
        /tmp/new-corpus fuzz/corpus/message

See fuzz/README.md; the check itself is `targets.check_message`.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _runner import main  # noqa: E402

if __name__ == "__main__":
    main("message")
