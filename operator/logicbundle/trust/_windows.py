"""Retired keys stay retired: a trusted root's validity windows, applied at signing time.

Every certificate authority, transparency log key and CT log key in a ``trusted_root.json``
carries a ``validFor`` window, and closing that window is how a Sigstore instance retires a
key (after a compromise, for instance). sigstore-python keeps a retired key in play: it
offers every CA and every log key whose window has started, whatever its end, and never
compares a window with the time the signature was made. A stolen key would go on signing
after its retirement.

Here a keyless bundle is verified against only the part of the root that was valid when it
was signed, at the times the services themselves vouch for:

* the certificate authority must be valid at the log's integrated time (and at any RFC 3161
  timestamp the bundle carries) and at its certificate's SCT time, when it was issued;
* the transparency log key at the integrated time (and at any RFC 3161 timestamp);
* the CT log key at the SCT time.

The times are read from the bundle before they are proven, and proven by that same
verification: the integrated time is signed by the log key (the inclusion promise), the SCT
time by the CT key, and only keys valid at those times are on offer. A time the signer made
up can only leave keys out, never bring one in. sigstore treats the key id that a log entry
or an SCT names as a hint and tries every key when none matches, so keys are chosen by
leaving the others out of the root, never by believing the hint.

When that fails but the whole root verifies, the signature is sound but for its time: each
part is then tried on its own to say which key was used outside its window.
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from cryptography import x509
from sigstore.errors import Error as SigstoreError
from sigstore.models import Bundle, TrustedRoot
from sigstore.verify import Verifier
from sigstore_models.common.v1 import TimeRange
from sigstore_models.trustroot.v1 import CertificateAuthority, TransparencyLogInstance
from sigstore_models.trustroot.v1 import TrustedRoot as TrustedRootMessage

from logicbundle.trust._errors import Rejection

_T = TypeVar("_T")

_Entry = CertificateAuthority | TransparencyLogInstance
_Selection = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
"""Indices kept of the root's certificate authorities, transparency logs and CT logs."""

_HINT = (
    "The trusted root retires a key by ending its validFor window, and a signature made "
    "outside a key's window is refused (a retired key may be in someone else's hands). "
    "Sign again with the Sigstore instance's current keys; if the window is wrong, correct "
    "it in the trusted root (spec.verify.keyless.trustedRootRef)."
)


class Part(enum.Enum):
    """The three kinds of keys of a trusted root that a keyless signature depends on."""

    CA = 0
    TLOG = 1
    CTLOG = 2

    @property
    def role(self) -> str:
        return _ROLES[self]


_ROLES = {
    Part.CA: "the certificate authority that issued the signing certificate",
    Part.TLOG: "the transparency log key that recorded the signature",
    Part.CTLOG: "the CT log key that signed the certificate's SCT",
}


@dataclass(frozen=True)
class SigningTimes:
    """When a keyless signature was made, by the services that vouch for it.

    ``integrated``: the transparency log's integrated time (Rekor v1 entries);
    ``stamped``: the RFC 3161 timestamps the bundle carries (Rekor v2 entries rely on them);
    ``certified``: the SCT timestamps embedded in the signing certificate.
    """

    integrated: tuple[datetime, ...]
    stamped: tuple[datetime, ...]
    certified: tuple[datetime, ...]

    def of(self, part: Part) -> tuple[datetime, ...]:
        """The times at which a key of ``part`` must have been valid."""
        if part is Part.CA:
            return self.integrated + self.stamped + self.certified
        if part is Part.TLOG:
            return self.integrated + self.stamped
        return self.certified

    def name(self, part: Part, when: datetime) -> str:
        """What ``when`` is, in a message about ``part``."""
        if part is Part.CA:
            return "signing time"
        if part is Part.CTLOG:
            return "SCT time"
        return "integrated time" if when in self.integrated else "RFC 3161 timestamp"

    @classmethod
    def of_bundle(cls, bundle: Bundle) -> SigningTimes:
        """The times a bundle claims; unproven until verification succeeds with them."""
        integrated = bundle.log_entry._inner.integrated_time
        try:
            logged = (datetime.fromtimestamp(integrated, tz=UTC),) if integrated else ()
        except (OverflowError, OSError, ValueError):
            raise Rejection(
                f"the transparency log entry's integrated time {integrated} is not a time",
                hint="Do not trust this signature; sign the artifact again.",
            ) from None
        stamps = bundle.verification_material.timestamp_verification_data
        return cls(
            integrated=logged,
            stamped=tuple(_utc(s.tst_info.gen_time) for s in stamps.rfc3161_timestamps)
            if stamps is not None
            else (),
            certified=_sct_times(bundle),
        )


def _sct_times(bundle: Bundle) -> tuple[datetime, ...]:
    try:
        scts = bundle.signing_certificate.extensions.get_extension_for_class(
            x509.PrecertificateSignedCertificateTimestamps
        ).value
        return tuple(_utc(sct.timestamp) for sct in scts)
    except (x509.ExtensionNotFound, ValueError, OverflowError):
        return ()  # sigstore refuses a certificate without a valid SCT anyway


def _utc(when: datetime) -> datetime:
    # cryptography's SCT timestamps are naive UTC; so is a trusted root's time written
    # without an offset. Comparing naive with aware datetimes raises, so all become aware.
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _window(entry: _Entry) -> TimeRange | None:
    if isinstance(entry, CertificateAuthority):
        return entry.valid_for
    return entry.public_key.valid_for  # None: no window, valid at any time


def _covers(window: TimeRange | None, when: datetime) -> bool:
    """``validFor`` is a closed range; a missing end means the key is still current."""
    if window is None:
        return True
    if when < _utc(window.start):
        return False
    return window.end is None or when <= _utc(window.end)


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class WindowedRoot:
    """A trusted root whose keys verify only signatures made inside their windows.

    Thread-safe. One sigstore ``Verifier`` is kept per distinct choice of keys (in practice
    one or two per root: signing times fall between the same rotations).
    """

    _CACHE_SIZE = 16

    def __init__(self, root: TrustedRoot) -> None:
        # sigstore's TrustedRoot exposes no accessors for the windows; its message does.
        self._message: TrustedRootMessage = root._inner
        self._parts: tuple[Sequence[_Entry], ...] = (
            self._message.certificate_authorities,
            self._message.tlogs,
            self._message.ctlogs,
        )
        self._everything: _Selection = (
            tuple(range(len(self._parts[0]))),
            tuple(range(len(self._parts[1]))),
            tuple(range(len(self._parts[2]))),
        )
        self._verifiers: OrderedDict[_Selection, Verifier | None] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, bundle: Bundle, check: Callable[[Verifier], _T]) -> _T:
        """``check`` with the keys valid at the bundle's signing times, or reject.

        ``check`` verifies the bundle with the verifier it is given and raises
        :class:`Rejection` when it does not verify.
        """
        times = SigningTimes.of_bundle(bundle)
        selection = self._select(times)
        verifier = self._verifier(selection)
        if verifier is not None:
            try:
                return check(verifier)
            except Rejection:
                if selection == self._everything:
                    raise  # no key was left out: the reason is not time
        # Does it verify at all? If not, that is the reason to give, not the windows.
        whole = self._verifier(self._everything)
        if whole is None:
            raise Rejection(
                "the trusted root has no usable certificate authority, transparency log or "
                "CT log (one is missing or does not parse)",
                hint="Use the complete trusted_root.json of your Sigstore instance.",
            )
        check(whole)
        raise self._why_outside(times, check)

    def _select(self, times: SigningTimes, *, only: Part | None = None) -> _Selection:
        """Every entry, but for each part (or for ``only``) those valid at its times."""
        kept = list(self._everything)
        for part in Part:
            if only is None or part is only:
                moments = times.of(part)
                kept[part.value] = tuple(
                    index
                    for index, entry in enumerate(self._parts[part.value])
                    if all(_covers(_window(entry), when) for when in moments)
                )
        return (kept[0], kept[1], kept[2])

    def _verifier(self, selection: _Selection) -> Verifier | None:
        """A sigstore verifier over the chosen entries; None when a part has none left."""
        with self._lock:
            if selection in self._verifiers:
                self._verifiers.move_to_end(selection)
                return self._verifiers[selection]
        verifier = None
        if all(selection):
            cas, tlogs, ctlogs = (
                [self._parts[part][index] for index in selection[part]] for part in range(3)
            )
            message = self._message.model_copy(
                update={"certificate_authorities": cas, "tlogs": tlogs, "ctlogs": ctlogs}
            )
            try:
                verifier = Verifier(trusted_root=TrustedRoot(message))
            except (SigstoreError, ValueError):
                verifier = None  # e.g. a certificate that does not parse: nothing verifies
        with self._lock:
            self._verifiers[selection] = verifier
            if len(self._verifiers) > self._CACHE_SIZE:
                self._verifiers.popitem(last=False)
        return verifier

    def _verifies(self, selection: _Selection, check: Callable[[Verifier], object]) -> bool:
        verifier = self._verifier(selection)
        if verifier is None:
            return False
        try:
            check(verifier)
        except Rejection:
            return False
        return True

    def _why_outside(self, times: SigningTimes, check: Callable[[Verifier], object]) -> Rejection:
        """Which keys the signature used outside their windows (it verifies without them)."""
        reasons = [
            self._outside(part, times, check)
            for part in Part
            if not self._verifies(self._select(times, only=part), check)
        ]
        if not reasons:  # each part passes alone, not together: say it as a whole
            reasons = [
                "no combination of keys that the trusted root holds valid at the signing "
                f"time {', '.join(_rfc3339(t) for t in times.of(Part.CA))} verifies it"
            ]
        return Rejection("; ".join(reasons), hint=_HINT)

    def _outside(self, part: Part, times: SigningTimes, check: Callable[[Verifier], object]) -> str:
        """Name the window(s) of the entries of ``part`` that verify this signature."""
        moments = times.of(part)
        used = []
        for index in self._everything[part.value]:
            only = list(self._everything)
            only[part.value] = (index,)
            if self._verifies((only[0], only[1], only[2]), check):
                used.append(_window(self._parts[part.value][index]))
        windows = [w for w in used if w is not None]
        if len(windows) != 1 or not moments:
            at = ", ".join(f"{times.name(part, t)} {_rfc3339(t)}" for t in moments)
            return (
                f"{part.role} is not valid at the {at or 'signing time'} in any of its "
                f"validFor windows in the trusted root "
                f"({'; '.join(map(_describe, windows)) or 'none verifies it'})"
            )
        window = windows[0]
        late = [t for t in moments if window.end is not None and t > _utc(window.end)]
        if late and window.end is not None:
            when = max(late)
            return (
                f"{part.role} was retired at {_rfc3339(_utc(window.end))}, before the "
                f"{times.name(part, when)} {_rfc3339(when)} (validFor {_describe(window)})"
            )
        when = min(moments)
        return (
            f"{part.role} is valid only from {_rfc3339(_utc(window.start))}, after the "
            f"{times.name(part, when)} {_rfc3339(when)} (validFor {_describe(window)})"
        )


def _describe(window: TimeRange) -> str:
    start = _rfc3339(_utc(window.start))
    if window.end is None:
        return f"{start} onwards"
    return f"{start} to {_rfc3339(_utc(window.end))}"
