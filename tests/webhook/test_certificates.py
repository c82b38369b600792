"""The webhook certificate: created once, shared through the store, renewed at 2/3 of its life."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress

import pytest
from cryptography import x509

from logicbundle.webhook import (
    CertificateBundle,
    CertificateConflictError,
    CertificateManager,
    renewal_time,
)

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
HOSTS = ("logicbundle-webhook.lb.svc", "127.0.0.1")
DAY = dt.timedelta(days=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


class FakeStore:
    def __init__(self) -> None:
        self.bundle: CertificateBundle | None = None
        self.writes = 0
        self.published: list[bytes] = []
        self.steal_next_write: CertificateBundle | None = None

    def read(self) -> CertificateBundle | None:
        return self.bundle

    def write(self, bundle: CertificateBundle, *, replaces: CertificateBundle | None) -> None:
        if self.steal_next_write is not None:
            self.bundle, self.steal_next_write = self.steal_next_write, None
            raise CertificateConflictError("someone else won")
        if self.bundle != replaces:
            raise CertificateConflictError("stale")
        self.bundle = bundle
        self.writes += 1

    def publish_ca(self, ca_bundle: bytes) -> None:
        if not self.published or self.published[-1] != ca_bundle:
            self.published.append(ca_bundle)


def _manager(
    store: FakeStore, clock: FakeClock, loaded: list[CertificateBundle] | None = None, **kw: object
) -> CertificateManager:
    return CertificateManager(
        store=store,
        hosts=HOSTS,
        clock=clock,
        ca_validity=dt.timedelta(days=30),
        cert_validity=dt.timedelta(days=9),
        on_change=None if loaded is None else loaded.append,
        **kw,  # type: ignore[arg-type]
    )


def _cas(bundle: CertificateBundle) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle.ca_bundle)


def test_the_first_check_creates_stores_and_publishes_a_certificate_for_the_hosts() -> None:
    store, clock, loaded = FakeStore(), FakeClock(), []
    bundle = _manager(store, clock, loaded).ensure()

    assert store.bundle == bundle and store.writes == 1
    assert store.published == [bundle.ca_bundle]
    assert loaded == [bundle]
    cert = bundle.certificate
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["logicbundle-webhook.lb.svc"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    cert.verify_directly_issued_by(bundle.ca_certificate)
    assert cert.not_valid_after_utc == T0 + dt.timedelta(days=9)


def test_a_second_replica_adopts_the_stored_certificate() -> None:
    store, clock = FakeStore(), FakeClock()
    first = _manager(store, clock).ensure()
    second = _manager(store, clock).ensure()
    assert second == first and store.writes == 1


def test_the_certificate_is_kept_until_two_thirds_of_its_life_then_renewed() -> None:
    store, clock, loaded = FakeStore(), FakeClock(), []
    manager = _manager(store, clock, loaded)
    first = manager.ensure()
    renew = renewal_time(first)
    assert renew == first.certificate.not_valid_before_utc + (
        first.certificate.not_valid_after_utc - first.certificate.not_valid_before_utc
    ) * (2 / 3)

    clock.now = renew - dt.timedelta(seconds=1)
    assert manager.ensure() == first
    assert manager.next_check(interval=dt.timedelta(hours=1)) == dt.timedelta(seconds=1)

    clock.now = renew
    second = manager.ensure()
    assert second != first and store.writes == 2
    assert second.cert != first.cert
    assert second.ca_bundle == first.ca_bundle  # the CA is not due: no caBundle change
    assert loaded == [first, second]
    assert store.published == [first.ca_bundle]


def test_a_renewed_ca_is_published_alongside_the_old_one_until_that_expires() -> None:
    store, clock = FakeStore(), FakeClock()
    manager = _manager(store, clock)
    first = manager.ensure()
    old_ca = first.ca_certificate

    clock.now = T0 + 20 * DAY + dt.timedelta(hours=1)  # past 2/3 of the CA's 30 days
    second = manager.ensure()
    new_ca, kept = _cas(second)
    assert kept == old_ca and new_ca != old_ca
    second.certificate.verify_directly_issued_by(new_ca)
    assert store.published[-1] == second.ca_bundle

    clock.now = new_ca.not_valid_before_utc + 20 * DAY + dt.timedelta(hours=1)
    third = manager.ensure()
    cas = _cas(third)
    assert old_ca not in cas  # expired by now: dropped
    assert len(cas) == 2


def test_a_certificate_for_other_hosts_is_replaced() -> None:
    store, clock = FakeStore(), FakeClock()
    _manager(store, clock).ensure()
    other = CertificateManager(store=store, hosts=("new.lb.svc",), clock=clock)
    bundle = other.ensure()
    assert store.writes == 2
    sans = bundle.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == ["new.lb.svc"]


def test_a_corrupt_secret_is_replaced() -> None:
    store, clock = FakeStore(), FakeClock()
    store.bundle = CertificateBundle(b"junk", b"junk", b"junk", b"junk")
    bundle = _manager(store, clock).ensure()
    assert store.bundle == bundle and bundle.cert != b"junk"


def test_a_replica_that_loses_the_race_uses_the_winners_certificate() -> None:
    store, clock = FakeStore(), FakeClock()
    winner = _manager(FakeStore(), clock).ensure()
    store.steal_next_write = winner
    assert _manager(store, clock).ensure() == winner


def test_the_check_loop_checks_again_and_stops_when_asked() -> None:
    store, clock = FakeStore(), FakeClock()
    manager = _manager(store, clock)
    checks: list[dt.datetime] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        publish = store.publish_ca

        def publish_and_count(ca_bundle: bytes) -> None:  # runs in the checking thread
            publish(ca_bundle)
            checks.append(clock.now)
            if len(checks) == 2:
                loop.call_soon_threadsafe(stop.set)

        store.publish_ca = publish_and_count  # type: ignore[method-assign]
        await manager.run(stop=stop, interval=dt.timedelta(0))

    asyncio.run(scenario())
    assert len(checks) == 2 and store.writes == 1


def test_the_check_loop_does_nothing_once_stopped() -> None:
    store = FakeStore()

    async def scenario() -> None:
        stop = asyncio.Event()
        stop.set()
        await _manager(store, FakeClock()).run(stop=stop)

    asyncio.run(scenario())
    assert store.writes == 0


def test_a_serving_certificate_cannot_outlive_its_ca() -> None:
    with pytest.raises(ValueError, match="outlive"):
        CertificateManager(
            store=FakeStore(),
            hosts=HOSTS,
            ca_validity=dt.timedelta(days=1),
            cert_validity=dt.timedelta(days=2),
        )
