"""Distribution "sipcalling": SIP registrar, proxy, redirect server and sipclient."""

from setuptools import find_packages, setup

setup(
    name="sipcalling",
    version="0.1.0",
    description=(
        "SIP registrar, stateful proxy, redirect server and a SIP user agent with RTP audio"
    ),
    python_requires=">=3.11",
    packages=find_packages(include=["sipcore*", "registrar*", "proxy*", "client*"])
    + ["twisted.plugins"],
    package_data={"twisted": ["plugins/sipcalling_plugins.py"]},
    install_requires=[
        "Twisted>=23.10",
        "pyOpenSSL",
        "service_identity",
        "txredisapi>=1.4.10",
        "numpy",
        "prometheus-client>=0.17",
        "rich",
        # mypyc_attr in sipcore/message.py (a no-op decorator when interpreted).
        "mypy_extensions",
    ],
    extras_require={
        "audio": ["PyAudio", "opuslib"],
        # mypyc compiles the hot path (deploy/compile.py, sipcore/accel.py); pinned
        # because its code generation is what the compiled build was tested with.
        "accel": ["mypy==2.4.1"],
        # Speech quality figures in bench/media.py (PESQ); without it the bench prints SNR.
        "bench": ["pesq"],
        "test": [
            "pytest",
            "pytest-twisted",
            "pytest-timeout",
            "hypothesis",
            # An independent pcap reader for the trace export (tests/sipcore/test_trace_pcap.py).
            "dpkt",
            "ruff",
            # Drives Debian's /usr/bin/chromium in tests/interop/test_status_page.py
            # (never `playwright install`).
            "playwright",
            # Coverage-guided fuzzing (fuzz/); binary wheels exist for Linux x86_64
            # only, elsewhere the bounded fuzz test skips.
            'atheris; platform_system == "Linux" and platform_machine == "x86_64"',
        ],
    },
    entry_points={
        "console_scripts": [
            "sipclient = client.cli:main",
            "sipcalling-trace = sipcore.trace.cli:main",
            "sipcalling-lab = proxy.lab.runner:main",
        ],
    },
)
