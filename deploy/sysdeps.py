"""Install the Debian packages a make target needs, or say in one line which are missing.

Usage: python3 deploy/sysdeps.py [--required] PACKAGE...

As root the missing packages are installed with apt-get. Otherwise one line names
them; with --required that is an error (exit 1), without it a warning (exit 0),
because `make run` can start the proxy without the audio libraries.
"""

from __future__ import annotations

import os
import subprocess
import sys


def missing(packages: list[str]) -> list[str]:
    absent = []
    for pkg in packages:
        probe = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg],
            capture_output=True,
            text=True,
        )
        if "install ok installed" not in probe.stdout:
            absent.append(pkg)
    return absent


def main(argv: list[str]) -> int:
    required = "--required" in argv
    packages = [a for a in argv if not a.startswith("--")]
    try:
        absent = missing(packages)
    except FileNotFoundError:
        names = " ".join(packages)
        print(f"sysdeps: not a Debian system (no dpkg-query); install by hand: {names}")
        return 1 if required else 0
    if not absent:
        return 0
    if os.geteuid() != 0:
        names = " ".join(absent)
        print(f"sysdeps: missing Debian packages (run as root or apt-get install): {names}")
        return 1 if required else 0
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("sysdeps: installing " + " ".join(absent), flush=True)
    subprocess.run(["apt-get", "update", "-q"], check=False, env=env, stdout=subprocess.DEVNULL)
    done = subprocess.run(["apt-get", "install", "-y", "-q", *absent], env=env)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
