"""The lab runner: bring up the two-domain lab, run the four experiments, write a report.

``sipcalling-lab`` (``make lab``, ``python -m proxy.lab``) starts a DNS server
(twisted.names), the a.lab and b.lab proxies, a redirect server and a second a.lab
proxy that routes through that redirect server, all with ``--trace``; then it drives
scripted ``sipclient`` processes through the experiments of the lab handbook and checks
what they print, what the trace files show and what the recordings contain.

* `proxy.lab.procs` — start/stop the processes (by PID), bounded waits on their output.
* `proxy.lab.audio` — tone WAVs for ``--play`` and the FFT check of ``--record`` files.
* `proxy.lab.experiments` — the four experiments and their checks.
* `proxy.lab.report` — ladder diagrams, pcap files, ``index.html``, ``results.json``.
* `proxy.lab.runner` — the command line and the progress display.
"""
