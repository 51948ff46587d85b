"""The status web server of `twistd sipproxy --web PORT`: what a lab watches live.

* `proxy.web.status` — `StatusObserver`, a tracer hook on the `SipEndpoint` that keeps
  counters, a call table and a bounded buffer of recent messages (no Twisted import
  beyond Deferreds for the location lookups).
* `proxy.web.metrics` — the Prometheus collector reading the observer at scrape time.
* `proxy.web.pages` — the twisted.web resources: ``/``, ``/status.json``, ``/metrics``,
  ``/calls/<Call-ID>.html`` (the ladder of `sipcore.trace.ladder`).
* `proxy.web.service` — `WebStatus`: builds the observer and listens on ``--web PORT``.
* `proxy.web.tracing` — `fan_out`: one tracer hook calling several (``--trace`` + ``--web``).

Nothing here is imported unless ``--web`` is given, so a proxy without it pays nothing.
"""
