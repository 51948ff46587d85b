# twisted.names Python zone for deploy/scaleout (`twistd -n dns --pyzone ...`).
# RFC 3263 §4.2 / RFC 2782: clients find a.lab's proxies through SRV. Lower priority
# numbers are tried first; within one priority, weight shares the load. Here node1 is
# the primary (priority 10) and node2 the standby (priority 20); to share load instead,
# give both the same priority and weights, e.g. 10 60 and 10 40.
# SCALEOUT_PORT is substituted by scaleout.sh (and by tests/interop/test_scaleout.py).
PORT = int("@SCALEOUT_PORT@")
zone = [
    SOA("a.lab", mname="ns.a.lab", rname="root.a.lab", serial=2024060101,  # noqa: F821
        refresh=3600, retry=600, expire=86400, minimum=60),
    SRV("_sip._udp.a.lab", 10, 50, PORT, "node1.a.lab"),  # noqa: F821
    SRV("_sip._udp.a.lab", 20, 50, PORT, "node2.a.lab"),  # noqa: F821
    SRV("_sip._tcp.a.lab", 10, 50, PORT, "node1.a.lab"),  # noqa: F821
    SRV("_sip._tcp.a.lab", 20, 50, PORT, "node2.a.lab"),  # noqa: F821
    A("node1.a.lab", "127.0.0.2"),  # noqa: F821
    A("node2.a.lab", "127.0.0.3"),  # noqa: F821
]
