"""Size limits applied while parsing; generous for real traffic, bounded for abuse."""

#: Largest message accepted (UDP datagram or one framed stream message), in bytes.
MAX_MESSAGE_SIZE = 65536
#: Most header fields (physical header lines after unfolding) in one message.
MAX_HEADERS = 256
#: Longest single header field (including folded continuation lines), in characters.
MAX_HEADER_LINE = 8192
#: Longest Request-URI; longer ones are answered with 414.
MAX_URI_LENGTH = 4096
#: Largest CSeq sequence number (RFC 3261 section 8.1.1.5: 32 bits).
MAX_CSEQ = 2**32 - 1
