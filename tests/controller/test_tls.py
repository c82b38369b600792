"""The distributor's certificate follows renewals of its mounted files, without a restart.

Each check is a real TLS handshake over a socket pair against the context
the distributor listens with.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from logicbundle.controller._tls import ReloadingCertificate
from tests.oci.mock_registry import make_self_signed_certificate


def _pair(tmp_path: Path, name: str) -> tuple[Path, Path]:
    directory = tmp_path / name
    directory.mkdir()
    return make_self_signed_certificate(directory, name=name)


def _served(context: ssl.SSLContext, *, server_name: str | None = None) -> str:
    """The common name of the certificate a new client is shown."""
    server_end, client_end = socket.socketpair()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            with context.wrap_socket(server_end, server_side=True):
                pass
        except (ssl.SSLError, OSError) as exc:  # the client hung up: seen on its side
            failure.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    try:
        with client.wrap_socket(client_end, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    finally:
        thread.join(timeout=10)
    assert der is not None, failure
    name = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
        x509.NameOID.COMMON_NAME
    )
    return str(name[0].value)


@pytest.fixture
def mounted(tmp_path: Path) -> tuple[Path, Path]:
    """Where the chart mounts the Secret: tls.crt and tls.key, first pair 'first'."""
    cert, key = _pair(tmp_path, "first")
    mount = tmp_path / "mount"
    mount.mkdir()
    shutil.copy(cert, mount / "tls.crt")
    shutil.copy(key, mount / "tls.key")
    return mount / "tls.crt", mount / "tls.key"


def _renew(mounted: tuple[Path, Path], cert: Path, key: Path) -> None:
    shutil.copy(cert, mounted[0])
    shutil.copy(key, mounted[1])


@pytest.mark.parametrize("server_name", [None, "localhost"], ids=["by-ip", "by-name"])
def test_a_renewed_certificate_is_served_to_new_connections_without_a_restart(
    tmp_path: Path, mounted: tuple[Path, Path], server_name: str | None
) -> None:
    serving = ReloadingCertificate(cert=mounted[0], key=mounted[1])
    assert _served(serving.context, server_name=server_name) == "first"

    _renew(mounted, *_pair(tmp_path, "second"))
    assert serving.check() is True

    assert _served(serving.context, server_name=server_name) == "second"


def test_unchanged_files_are_not_reloaded(mounted: tuple[Path, Path]) -> None:
    serving = ReloadingCertificate(cert=mounted[0], key=mounted[1])

    assert serving.check() is False
    assert _served(serving.context) == "first"


def test_a_half_renewed_pair_is_refused_and_the_previous_one_keeps_serving(
    tmp_path: Path, mounted: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    serving = ReloadingCertificate(cert=mounted[0], key=mounted[1])
    new_cert, new_key = _pair(tmp_path, "second")
    shutil.copy(new_cert, mounted[0])  # the certificate landed, its key not yet

    assert serving.check() is False
    assert _served(serving.context) == "first"
    assert "does not load" in caplog.text
    assert "PRIVATE KEY" not in caplog.text

    shutil.copy(new_key, mounted[1])
    assert serving.check() is True
    assert _served(serving.context) == "second"


def test_files_gone_for_a_moment_keep_the_current_pair(mounted: tuple[Path, Path]) -> None:
    serving = ReloadingCertificate(cert=mounted[0], key=mounted[1])
    mounted[1].unlink()

    assert serving.check() is False
    assert _served(serving.context) == "first"


def test_the_distributor_does_not_start_without_a_certificate_that_loads(
    tmp_path: Path,
) -> None:
    cert, _ = _pair(tmp_path, "first")
    _, other_key = _pair(tmp_path, "other")

    with pytest.raises(ssl.SSLError):
        ReloadingCertificate(cert=cert, key=other_key)
