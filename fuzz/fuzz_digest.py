"""Coverage-guided fuzzing of the digest parser with atheris (libFuzzer).

    .venv/bin/python fuzz/fuzz_digest.py -max_total_time=60 -dict=fuzz/sip.dict \
        /tmp/new-corpus fuzz/corpus/digest

See fuzz/README.md; the check itself is `targets.check_digest`.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _runner import main  # noqa: E402

if __name__ == "__main__":
    main("digest")
