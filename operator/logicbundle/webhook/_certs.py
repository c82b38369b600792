"""The webhook's TLS: a CA and a serving certificate the operator makes and rotates itself.

Made with ``cryptography`` (kopf's self-signed generator fails on OpenSSL 3).
The pair lives in one Secret, so every replica serves the same certificate
and a restarted operator keeps it; the CA goes into the webhook
configuration's ``caBundle``.

Rotation without a window where the API server distrusts us: a certificate
is renewed at two thirds of its lifetime.  When the CA itself is renewed,
``ca.crt`` holds the new CA *followed by the old one* until the old one
expires, so a replica still serving the previous leaf stays trusted until it
reloads.  Order on renewal: write the Secret, publish the caBundle, then
swap the server's certificate.

The Kubernetes calls are behind :class:`CertificateStore` (a small sync
protocol, called from a thread), and the clock is injected, so rotation is
tested with fake time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger("logicbundle.webhook.certs")

DEFAULT_CA_VALIDITY: Final = dt.timedelta(days=3650)
DEFAULT_CERT_VALIDITY: Final = dt.timedelta(days=365)
RENEW_AT: Final = 2 / 3
"""Fraction of a certificate's lifetime after which it is renewed."""
BACKDATE: Final = dt.timedelta(minutes=5)
"""``notBefore`` is set this far in the past, for clocks slightly behind ours."""
DEFAULT_CHECK_INTERVAL: Final = dt.timedelta(minutes=1)
"""How often the Secret is re-read, to pick up a renewal made by another replica."""

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateConflictError(Exception):
    """Another replica wrote the Secret first; read it again and use theirs."""


@dataclass(frozen=True, slots=True)
class CertificateBundle:
    """The Secret's content: the CA (key and bundle) and the serving pair, all PEM.

    ``ca_bundle`` may hold the previous CA after the current one (see the
    module doc); the first certificate in it is the one that signs.
    """

    ca_bundle: bytes
    ca_key: bytes
    cert: bytes
    key: bytes

    @property
    def ca_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.ca_bundle)[0]

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert)

    def secret_data(self) -> dict[str, bytes]:
        """The Secret's keys (``kubernetes.io/tls`` plus the CA)."""
        return {
            "ca.crt": self.ca_bundle,
            "ca.key": self.ca_key,
            "tls.crt": self.cert,
            "tls.key": self.key,
        }

    @classmethod
    def from_secret_data(cls, data: dict[str, bytes]) -> CertificateBundle:
        """The inverse of :meth:`secret_data`; KeyError when a key is missing."""
        return cls(data["ca.crt"], data["ca.key"], data["tls.crt"], data["tls.key"])


class CertificateStore(Protocol):
    """Where the bundle is kept and where the CA is published (the Kubernetes side)."""

    def read(self) -> CertificateBundle | None:
        """The stored bundle; None when there is none (or it is unreadable)."""

    def write(self, bundle: CertificateBundle, *, replaces: CertificateBundle | None) -> None:
        """Store ``bundle`` if the stored one is still ``replaces``, else raise
        :class:`CertificateConflictError`."""

    def publish_ca(self, ca_bundle: bytes) -> None:
        """Make the API server trust ``ca_bundle`` (patch the webhook configuration's caBundle)."""


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _new_ca(*, common_name: str, now: dt.datetime, validity: dt.timedelta) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _sans(hosts: Sequence[str]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    return sans


def _new_leaf(
    *,
    hosts: Sequence[str],
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    now: dt.datetime,
    validity: dt.timedelta,
) -> tuple[bytes, bytes]:
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the stored CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _due(cert: x509.Certificate, now: dt.datetime) -> bool:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * RENEW_AT


def renewal_time(bundle: CertificateBundle) -> dt.datetime:
    """When the bundle's serving certificate (or its CA) is next due for renewal."""
    times = []
    for cert in (bundle.certificate, bundle.ca_certificate):
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        times.append(start + (end - start) * RENEW_AT)
    return min(times)


def _hosts_of(cert: x509.Certificate) -> set[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    hosts = set(sans.get_values_for_type(x509.DNSName))
    hosts.update(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))
    return hosts


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class CertificateManager:
    """Creates, stores, renews and publishes the webhook's certificate.

    ``hosts`` are the names the serving certificate carries: the Service's
    DNS names (:attr:`ServiceEndpoint.dns_names`) and, for local runs,
    ``127.0.0.1``.  ``on_change`` is called with every new bundle this
    replica starts using (wire it to :meth:`ServingTls.load`).
    """

    def __init__(
        self,
        *,
        store: CertificateStore,
        hosts: Sequence[str],
        clock: Clock = _utcnow,
        ca_validity: dt.timedelta = DEFAULT_CA_VALIDITY,
        cert_validity: dt.timedelta = DEFAULT_CERT_VALIDITY,
        ca_common_name: str = "logicbundle-webhook-ca",
        on_change: Callable[[CertificateBundle], None] | None = None,
    ) -> None:
        if not hosts:
            raise ValueError("the serving certificate needs at least one host name")
        if cert_validity > ca_validity:
            raise ValueError("the serving certificate cannot outlive its CA")
        self._store = store
        self._hosts = tuple(hosts)
        self._clock = clock
        self._ca_validity = ca_validity
        self._cert_validity = cert_validity
        self._ca_name = ca_common_name
        self._on_change = on_change
        self._current: CertificateBundle | None = None

    @property
    def current(self) -> CertificateBundle | None:
        """The bundle in use (None before the first :meth:`ensure`)."""
        return self._current

    def _usable(self, bundle: CertificateBundle, now: dt.datetime) -> bool:
        try:
            ca, cert = bundle.ca_certificate, bundle.certificate
            serialization.load_pem_private_key(bundle.key, password=None)
        except (ValueError, TypeError):
            return False
        return (
            not _due(ca, now)
            and not _due(cert, now)
            and _signed_by(cert, ca)
            and set(self._hosts) <= _hosts_of(cert)
        )

    def _renew(self, stored: CertificateBundle | None, now: dt.datetime) -> CertificateBundle:
        ca_bundle: bytes | None = None
        ca_key: bytes | None = None
        if stored is not None:
            try:
                ca = stored.ca_certificate
                serialization.load_pem_private_key(stored.ca_key, password=None)
                if not _due(ca, now):
                    ca_bundle, ca_key = stored.ca_bundle, stored.ca_key
            except (ValueError, TypeError):
                pass
        if ca_bundle is None or ca_key is None:
            new_ca, ca_key = _new_ca(common_name=self._ca_name, now=now, validity=self._ca_validity)
            ca_bundle = new_ca
            if stored is not None:
                # Keep trusting the previous CA until it expires (see the module doc).
                try:
                    old = stored.ca_certificate
                    if old.not_valid_after_utc > now:
                        ca_bundle += old.public_bytes(serialization.Encoding.PEM)
                except ValueError:
                    pass
            signing = new_ca
        else:
            signing = x509.load_pem_x509_certificates(ca_bundle)[0].public_bytes(
                serialization.Encoding.PEM
            )
        cert, key = _new_leaf(
            hosts=self._hosts,
            ca_cert_pem=signing,
            ca_key_pem=ca_key,
            now=now,
            validity=self._cert_validity,
        )
        return CertificateBundle(ca_bundle=ca_bundle, ca_key=ca_key, cert=cert, key=key)

    def ensure(self) -> CertificateBundle:
        """Read the Secret; renew it when due (or missing, or for other hosts); publish; return it.

        Blocking (it calls the store): run it in a thread from async code.
        A replica that loses the race to write the Secret adopts the winner's.
        """
        now = self._clock()
        stored = self._store.read()
        if stored is not None and self._usable(stored, now):
            bundle = stored
        else:
            renewed = self._renew(stored, now)
            try:
                self._store.write(renewed, replaces=stored)
                expires = renewed.certificate.not_valid_after_utc
                logger.info("webhook certificate renewed; valid until %s", expires)
                bundle = renewed
            except CertificateConflictError:
                winner = self._store.read()
                if winner is None:
                    raise
                bundle = winner
        # Every time, not only on change: it also repairs a caBundle that a
        # re-applied chart reset (the store skips the write when it matches).
        self._store.publish_ca(bundle.ca_bundle)
        if bundle != self._current:
            self._current = bundle
            if self._on_change is not None:
                self._on_change(bundle)
        return bundle

    def next_check(self, *, interval: dt.timedelta = DEFAULT_CHECK_INTERVAL) -> dt.timedelta:
        """How long until the next :meth:`ensure`: the interval, or the renewal if sooner."""
        if self._current is None:
            return dt.timedelta(0)
        until = renewal_time(self._current) - self._clock()
        return max(dt.timedelta(0), min(interval, until))

    async def run(
        self, *, stop: asyncio.Event, interval: dt.timedelta = DEFAULT_CHECK_INTERVAL
    ) -> None:
        """Keep the certificate fresh until ``stop`` is set; errors are logged and retried."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.ensure)
                delay = self.next_check(interval=interval)
            except Exception:
                logger.exception("webhook certificate check failed; retrying")
                delay = interval
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay.total_seconds())
            except TimeoutError:
                continue
