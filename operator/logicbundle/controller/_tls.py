"""The distributor's serving certificate, reloaded when its mounted files change.

The chart mounts the certificate from a Secret; cert-manager (or anyone)
renews it in place and the kubelet swaps the files under the mount.  The
server keeps one listening context whose ``sni_callback`` hands every new
handshake the newest good context (OpenSSL calls it with or without SNI), so
a renewal needs no restart and drops no long-poll.

A renewal is loaded into a fresh context, never into the one serving: a
failed ``load_cert_chain`` can leave a context with the new certificate and
the old key.  A pair that does not load (a key written before its
certificate, a half-renewed Secret) is refused, and the previous pair keeps
serving until a later check finds a good one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from pathlib import Path

logger = logging.getLogger("logicbundle.operator")

RELOAD_INTERVAL = 30.0
"""Seconds between checks of the certificate files (a Secret update takes longer to land)."""


def _context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class ReloadingCertificate:
    """A server context for ``cert`` and ``key`` that follows their renewals.

    Construction loads the pair and raises when it does not load (the
    operator must not start serving without a certificate); later failures
    only keep the previous pair.
    """

    def __init__(self, *, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self._fingerprint = self._read_fingerprint()
        self._current = _context(cert, key)
        self.context = _context(cert, key)
        """The context to listen with; each handshake is switched to the newest pair."""
        self.context.sni_callback = self._select

    def _select(self, connection: ssl.SSLObject, _name: str | None, _: ssl.SSLContext) -> None:
        connection.context = self._current

    def _read_fingerprint(self) -> bytes | None:
        try:
            return hashlib.sha256(self.cert.read_bytes() + b"\0" + self.key.read_bytes()).digest()
        except OSError:
            return None

    def check(self) -> bool:
        """Reload when the files changed and the new pair loads; True when it now serves."""
        seen = self._read_fingerprint()
        if seen is None or seen == self._fingerprint:
            return False
        try:
            fresh = _context(self.cert, self.key)
        except (ssl.SSLError, OSError) as exc:
            # The type only: OpenSSL's text adds nothing an operator can act on here.
            logger.warning(
                "the distributor certificate %s changed but does not load (%s); "
                "still serving the previous one",
                self.cert,
                type(exc).__name__,
            )
            return False
        self._current, self._fingerprint = fresh, seen
        logger.info("the distributor certificate %s was renewed; serving the new one", self.cert)
        return True

    async def follow(self, interval: float = RELOAD_INTERVAL) -> None:
        """Check every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.check)
