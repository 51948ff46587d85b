"""Size limits applied while parsing; generous for real traffic, bounded for abuse."""

from typing import Final

#: Largest message accepted (UDP datagram or one framed stream message), in bytes.
MAX_MESSAGE_SIZE: Final = 65536
#: Most header fields (physical header lines after unfolding) in one message.
MAX_HEADERS: Final = 256
#: Longest single header field (including folded continuation lines), in characters.
MAX_HEADER_LINE: Final = 8192
#: Longest Request-URI; longer ones are answered with 414.
MAX_URI_LENGTH: Final = 4096
#: Largest CSeq sequence number (RFC 3261 section 8.1.1.5: 32 bits).
MAX_CSEQ: Final = 2**32 - 1
#: Most Via values in one message. Max-Forwards starts at 70 (RFC 3261 §8.1.1.6), so a
#: legitimate request collects at most ~71; the margin keeps a 483 answerable.
MAX_VIAS: Final = 72
#: Most Route and Record-Route values each (a route set, RFC 3261 §12.1).
MAX_ROUTES: Final = 64
#: Most Contact values (a REGISTER listing bindings, RFC 3261 §10.2.1).
MAX_CONTACTS: Final = 100
