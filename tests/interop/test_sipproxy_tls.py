"""SIP over TLS (RFC 3261 §26.3.1): `sipproxy --tls-port` with a certificate and key."""

from __future__ import annotations

import datetime
import socket
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.interop.conftest import free_port


def make_cert(directory) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.lab")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.lab")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture
def tls_proxy(start_server, tmp_path):
    cert, key = make_cert(tmp_path)
    tls_port = free_port()
    server = start_server(
        "sipproxy", "--location", "memory:", "--tls-port", str(tls_port),
        "--tls-cert", cert, "--tls-key", key,
    )
    server.tls_port = tls_port
    server.cert = cert
    return server


def _client_context(cert: str, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cert)
    context.check_hostname = False  # the cert names a.lab, we dial 127.0.0.1
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
    return context


def test_options_over_tls(tls_proxy):
    context = _client_context(tls_proxy.cert)
    with socket.create_connection(("127.0.0.1", tls_proxy.tls_port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            port = tls.getsockname()[1]
            tls.sendall(
                (
                    "OPTIONS sip:a.lab SIP/2.0\r\n"
                    f"Via: SIP/2.0/TLS 127.0.0.1:{port};branch=z9hG4bKtls1\r\n"
                    "From: <sip:x@a.lab>;tag=1\r\nTo: <sip:a.lab>\r\nCall-ID: tls1\r\n"
                    "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                ).encode()
            )
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = tls.recv(65535)
                if not chunk:
                    break
                answer += chunk
    assert answer.startswith(b"SIP/2.0 200 OK")


def test_tls_below_1_2_refused(tls_proxy):
    context = _client_context(tls_proxy.cert, maximum=ssl.TLSVersion.TLSv1_1)
    with socket.create_connection(("127.0.0.1", tls_proxy.tls_port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            context.wrap_socket(raw)
    assert tls_proxy.alive()


def test_missing_certificate_file_is_a_usage_error(start_server, tmp_path):
    with pytest.raises(RuntimeError, match="no such file"):
        start_server("sipproxy", "--tls-port", str(free_port()),
                     "--tls-cert", str(tmp_path / "nope.pem"),
                     "--tls-key", str(tmp_path / "nope.key"))


def test_garbage_certificate_is_a_usage_error(start_server, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(RuntimeError, match="cannot use TLS certificate"):
        start_server("sipproxy", "--tls-port", str(free_port()),
                     "--tls-cert", str(bad), "--tls-key", str(bad))
