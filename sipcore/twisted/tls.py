# -*- test-case-name: tests.interop.test_sipproxy_tls -*-
"""TLS server settings for SIPS (RFC 3261 §26.3.1): our certificate, TLS 1.2 or newer."""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet import ssl


class TLSConfigError(ValueError):
    """The certificate or key cannot be used; the message is one line for the user."""


def server_context(cert_path: str, key_path: str, ca_path: str | None = None) -> Any:
    """Context factory for `listenSSL`; with `ca_path`, clients must present a cert it signed."""
    try:
        with open(cert_path, "rb") as f:
            cert_pem = f.read()
        with open(key_path, "rb") as f:
            key_pem = f.read()
        certificate = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
        extra: dict[str, Any] = {}
        if ca_path is not None:
            with open(ca_path, "rb") as f:
                authority = ssl.Certificate.loadPEM(f.read())
            extra = {"verify": True, "caCerts": [authority.original],
                     "requireCertificate": True}
        return ssl.CertificateOptions(
            privateKey=certificate.privateKey.original,
            certificate=certificate.original,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            **extra,
        )
    except TLSConfigError:
        raise
    except (OSError, SSL.Error, crypto.Error, ValueError, TypeError) as err:
        raise TLSConfigError(f"cannot use TLS certificate {cert_path} / key {key_path}: {err}")\
            from None
