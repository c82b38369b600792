"""The bundles volume fills up while a version unpacks (issue 11's fault row, on a real tmpfs).

The swap fails cleanly: the error is in the agent's report, ``current`` still
names the old version (the application keeps it), nothing of the attempt is
left on the volume, and once space is freed the retry installs the version.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.sample_app.bundles import ENTRYPOINT, EXAMPLES_DIR, INTERFACE
from logicbundle.artifact import oci_manifest
from logicbundle.bundle import pack_directory
from logicbundle.oci import sha256_digest
from tests.agent.conftest import DEADLINE, App, FakeDistributor, MakeAgent, Packed, wait_for

TMPFS_BYTES = 2 * 1024 * 1024
BIG_FILE_BYTES = 512 * 1024
"""Random, so the layer does not compress: the unpacked version needs this much at least."""
BACKOFF = 3.0
"""Long enough that the checks below run between two attempts (the worker is idle then)."""


@pytest.fixture
def root() -> Iterator[Path]:
    """The agent's root (its bundles volume) on a tmpfs of :data:`TMPFS_BYTES`."""
    path = Path(tempfile.mkdtemp(prefix="lba-", dir="/tmp"))
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0700", "lbdisk", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mounted.returncode != 0:
            pytest.skip(f"mounting a tmpfs was refused: {mounted.stderr.strip()}")
        try:
            yield path
        finally:
            subprocess.run(["umount", str(path)], check=True)
    finally:
        path.rmdir()


@pytest.fixture(scope="module")
def big() -> Packed:
    """pricing-v2 with an incompressible file of :data:`BIG_FILE_BYTES`."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "pricing-big"
        shutil.copytree(EXAMPLES_DIR / "pricing-v2", source)
        (source / "blob.bin").write_bytes(os.urandom(BIG_FILE_BYTES))
        packed = pack_directory(
            source, name="pricing", version="3.0.0", interface=INTERFACE, entrypoint=ENTRYPOINT
        )
    manifest = oci_manifest(packed)
    return Packed(
        digest=sha256_digest(manifest),
        manifest=manifest,
        config=packed.config,
        config_digest=packed.config_digest,
        layer=packed.layer,
        layer_digest=packed.layer_digest,
    )


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def _free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _fill(path: Path, *, leave: int) -> Path:
    """A file taking all the free space of ``path``'s file system but ``leave`` bytes."""
    filler = path / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb") as out:
        while (room := _free(path) - leave) > 0:
            try:
                out.write(chunk[: min(len(chunk), room)])
                out.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    return filler


def _current(root: Path) -> str | None:
    link = root / "pricing" / "current"
    return link.readlink().name if link.is_symlink() else None


@pytest.mark.parametrize(
    "leave",
    [
        pytest.param(128 * 1024, id="room-for-the-manifest-not-the-files"),
        pytest.param(0, id="no-room-at-all"),
    ],
)
def test_a_full_volume_fails_the_swap_cleanly_and_the_retry_succeeds_once_freed(
    distributor: FakeDistributor,
    bundles: dict[str, Packed],
    big: Packed,
    app: App,
    make_agent: MakeAgent,
    root: Path,
    leave: int,
) -> None:
    v1 = bundles["pricing-v1"]
    distributor.add(v1)
    distributor.add(big)
    distributor.set_targets({"pricing": {"digest": v1.digest}})
    agent = make_agent(distributor=distributor.url, backoff_base=BACKOFF)
    worker = agent.workers["pricing"]
    wait_for(lambda: app.host.active_digest == v1.digest, "v1 in the app")
    assert worker.wait_idle(DEADLINE)
    before = _tree(root / "pricing")
    filler = _fill(root, leave=leave)
    assert _free(root) < BIG_FILE_BYTES

    distributor.set_targets({"pricing": {"digest": big.digest}})
    status = wait_for(
        lambda: (s := agent.statuses()["pricing"]).last_error is not None and s,
        "the failed swap's error",
    )
    assert worker.wait_idle(DEADLINE)
    error = status.last_error
    assert error is not None
    assert (error.digest, error.reason) == (big.digest, "DiskError")
    assert "No space left on device" in error.message
    assert status.last_swap is not None and status.last_swap.outcome == "failed"
    # What the distributor hears: the error, and the old version still active.
    entry = agent.report()["bundles"]["pricing"]
    assert entry["active"] == v1.digest
    assert entry["lastError"]["digest"] == big.digest
    # current unchanged, the application never told; no partial directory, no temporary
    # file, no manifest without its version.
    assert _current(root) == v1.digest
    assert app.host.active_digest == v1.digest
    assert _tree(root / "pricing") == before

    filler.unlink()
    wait_for(lambda: app.host.active_digest == big.digest, "the retry, once space is freed")
    assert _current(root) == big.digest
    # The app is told before the worker records the swap: wait for the record too.
    wait_for(
        lambda: (
            (last := agent.statuses()["pricing"].last_swap) is not None
            and last.outcome == "activated"
        ),
        "the retry recorded as activated",
    )
    with contextlib.suppress(FileNotFoundError):
        filler.unlink()
