"""Certificates for the API server and webhooks verify the way TLS clients check them."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from pathlib import Path
from socket import create_connection

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from e2e.harness import pki


def test_a_serving_certificate_names_127_0_0_1_and_localhost() -> None:
    ca = pki.CertificateAuthority()
    pair = ca.issue("api", dns_names=("localhost",), ip_addresses=("127.0.0.1",), server=True)
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_an_admin_client_certificate_is_in_system_masters() -> None:
    pair = pki.CertificateAuthority().issue("admin", organizations=("system:masters",), client=True)
    subject = x509.load_pem_x509_certificate(pair.cert_pem).subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"


def test_a_tls_client_trusting_the_ca_accepts_the_serving_certificate(tmp_path: Path) -> None:
    ca = pki.CertificateAuthority()
    crt, key = ca.issue("srv", ip_addresses=("127.0.0.1",), server=True).write(tmp_path, "srv")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(crt, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"hi")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    with (
        create_connection(("127.0.0.1", port)) as raw,
        client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.recv(2) == b"hi"
    thread.join(5)
    listener.close()


def test_private_keys_are_written_readable_by_the_owner_only(tmp_path: Path) -> None:
    _, key = pki.CertificateAuthority().issue("x", client=True).write(tmp_path, "x")
    assert key.stat().st_mode & 0o077 == 0
