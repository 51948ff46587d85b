"""deploy/make-lab-ca.sh and SIPS with its certificates (RFC 3261 §26.3.1, RFC 5922).

The script runs in a temp dir; a real `twistd -n sipproxy` loads what it made; Python's
ssl module, with the lab CA and hostname checking on, is the TLS client.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.interop.conftest import free_port

pytestmark = pytest.mark.timeout(90)

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "make-lab-ca.sh"
FILES = ("ca.crt", "ca.key", "a.lab.crt", "a.lab.key", "b.lab.crt", "b.lab.key",
         "client.crt", "client.key")


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("labca")
    result = run_script(cwd=work)  # no DIR: the default, var/pki under the cwd
    assert result.returncode == 0, result.stderr
    return work / "var" / "pki"


def test_usage_and_bad_arguments(tmp_path):
    result = run_script("--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("Usage:")
    result = run_script("--bogus", cwd=tmp_path)
    assert result.returncode == 2 and "unknown option --bogus" in result.stderr
    assert "Usage:" in result.stderr
    result = run_script("one", "two", cwd=tmp_path)
    assert result.returncode == 2 and "only one DIR" in result.stderr
    assert not (tmp_path / "one").exists()


def test_makes_every_file_with_private_keys(pki):
    for name in FILES:
        assert (pki / name).stat().st_size > 0, name
        if name.endswith(".key"):
            assert stat.S_IMODE((pki / name).stat().st_mode) == 0o600, name


def test_is_idempotent(pki):
    before = {name: (pki / name).read_bytes() for name in FILES}
    result = run_script(str(pki), cwd=pki)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout
    assert {name: (pki / name).read_bytes() for name in FILES} == before


def test_a_missing_leaf_is_remade_under_the_same_ca(tmp_path):
    assert run_script(str(tmp_path / "pki"), cwd=tmp_path).returncode == 0
    pki = tmp_path / "pki"
    ca = (pki / "ca.crt").read_bytes()
    (pki / "b.lab.crt").unlink()
    result = run_script(str(pki), cwd=tmp_path)
    assert result.returncode == 0 and "made b.lab.crt" in result.stdout
    assert (pki / "ca.crt").read_bytes() == ca
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(pki / "ca.crt"), str(pki / "b.lab.crt")],
        capture_output=True, text=True, timeout=30,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_certificates_name_their_domains(pki):
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for domain, ip in (("a.lab", "127.0.0.2"), ("b.lab", "127.0.0.3")):
        cert = x509.load_pem_x509_certificate((pki / f"{domain}.crt").read_bytes())
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [domain]
        assert ipaddress.ip_address(ip) in san.get_values_for_type(x509.IPAddress)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    client = x509.load_pem_x509_certificate((pki / "client.crt").read_bytes())
    client.verify_directly_issued_by(ca)
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


# -- the proxy with the lab certificates ------------------------------------------------------


def options_over_tls(port: int, context: ssl.SSLContext, server_hostname: str) -> bytes:
    """OPTIONS over TLS; the answer's bytes (b'' if the server closed on us)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            local = tls.getsockname()[1]
            tls.sendall(
                (
                    "OPTIONS sip:a.lab SIP/2.0\r\n"
                    f"Via: SIP/2.0/TLS 127.0.0.1:{local};branch=z9hG4bKlabca{local}\r\n"
                    "From: <sip:x@a.lab>;tag=1\r\nTo: <sip:a.lab>\r\n"
                    f"Call-ID: labca{local}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                    "Content-Length: 0\r\n\r\n"
                ).encode()
            )
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = tls.recv(65535)
                if not chunk:
                    break
                answer += chunk
            return answer


def lab_client(pki: Path, with_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    assert context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED
    if with_cert:
        context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    return context


def tls_proxy(start_server, pki: Path, *extra: str):
    port = free_port()
    server = start_server(
        "sipproxy", "--domain", "a.lab", "--location", "memory:", "--tls-port", str(port),
        "--tls-cert", str(pki / "a.lab.crt"), "--tls-key", str(pki / "a.lab.key"), *extra,
    )
    server.tls_port = port
    return server


def test_proxy_serves_the_lab_certificate_and_it_verifies(start_server, pki):
    proxy = tls_proxy(start_server, pki)
    context = lab_client(pki)
    # check_hostname against the SAN: by name and by address.
    assert options_over_tls(proxy.tls_port, context, "a.lab").startswith(b"SIP/2.0 200 OK")
    assert options_over_tls(proxy.tls_port, context, "127.0.0.1").startswith(b"SIP/2.0 200")
    with pytest.raises(ssl.SSLCertVerificationError, match="b.lab|match"):
        options_over_tls(proxy.tls_port, context, "b.lab")  # a.lab's cert is not b.lab's
    assert proxy.alive()


def test_tls_ca_requires_a_client_certificate(start_server, pki):
    proxy = tls_proxy(start_server, pki, "--tls-ca", str(pki / "ca.crt"))
    # Without a certificate: refused. With TLS 1.3 the client may finish its side of
    # the handshake before the server's alert arrives, so the refusal can surface on
    # the first read instead: either way no SIP answer comes back.
    try:
        answer = options_over_tls(proxy.tls_port, lab_client(pki), "a.lab")
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        answer = b""
    assert answer == b""
    # With the lab client certificate: accepted.
    answer = options_over_tls(proxy.tls_port, lab_client(pki, with_cert=True), "a.lab")
    assert answer.startswith(b"SIP/2.0 200 OK"), answer
    assert proxy.alive()


def test_a_certificate_from_another_ca_is_refused(start_server, pki, tmp_path):
    other = tmp_path / "other"
    assert run_script(str(other), cwd=tmp_path).returncode == 0
    proxy = tls_proxy(start_server, pki, "--tls-ca", str(pki / "ca.crt"))
    context = lab_client(pki)
    context.load_cert_chain(str(other / "client.crt"), str(other / "client.key"))
    try:
        answer = options_over_tls(proxy.tls_port, context, "a.lab")
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        answer = b""
    assert answer == b""
    assert proxy.alive()


def test_script_is_executable():
    assert os.access(SCRIPT, os.X_OK)
