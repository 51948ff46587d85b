# twisted.names Python zone for the lab (`twistd -n dns --pyzone deploy/lab/lab.zone.py`).
# RFC 3263 §4.2: SRV records name each domain's proxy; the A records give its address.
# Ports match deploy/lab/lab.sh: a.lab proxy 5060, b.lab proxy 5070, redirect 5080.
zone = [
    SOA("lab", mname="ns.lab", rname="root.lab", serial=2024010101,  # noqa: F821
        refresh=3600, retry=600, expire=86400, minimum=60),
    SRV("_sip._udp.a.lab", 0, 0, 5060, "sip.a.lab"),  # noqa: F821
    SRV("_sip._tcp.a.lab", 0, 0, 5060, "sip.a.lab"),  # noqa: F821
    SRV("_sip._udp.b.lab", 0, 0, 5070, "sip.b.lab"),  # noqa: F821
    SRV("_sip._tcp.b.lab", 0, 0, 5070, "sip.b.lab"),  # noqa: F821
    A("sip.a.lab", "127.0.0.1"),  # noqa: F821
    A("sip.b.lab", "127.0.0.1"),  # noqa: F821
]
