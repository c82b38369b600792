"""load_current() restores the request split the agent describes next to ``current``.

Without it an application that (re)starts during a split loads the primary
only, and the candidate's share of keyed calls is lost until the agent
changes something.
"""

from __future__ import annotations

import errno
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from logicbundle.sdk import SPLIT_FILE, LogicHost, read_split_descriptor, serve
from logicbundle.sdk import _protocol as protocol
from tests.sdk.conftest import BUNDLE, WriteBundle, simple


def _make_current(root: Path, digest: str) -> None:
    (root / BUNDLE / "current").symlink_to(Path(".versions") / digest)


def _describe(root: Path, descriptor: Any) -> None:
    data = descriptor if isinstance(descriptor, str) else json.dumps(descriptor)
    (root / BUNDLE / SPLIT_FILE).write_text(data)


def test_load_current_restores_the_split_the_agent_described(
    host: LogicHost, root: Path, write_bundle: WriteBundle
) -> None:
    stable, candidate = write_bundle(simple("stable")), write_bundle(simple("candidate"))
    _make_current(root, stable.digest)
    _describe(root, {"digest": stable.digest, "candidate": candidate.digest, "weight": 25})

    activation = host.load_current()

    assert (activation.digest, activation.candidate, activation.weight) == (
        stable.digest,
        candidate.digest,
        25.0,
    )
    ident = host.function("ident")
    assert ident() == "stable"
    assert {ident.by_key(f"user-{i}") for i in range(200)} == {"stable", "candidate"}


def test_without_a_descriptor_load_current_loads_the_primary_alone(
    host: LogicHost, root: Path, write_bundle: WriteBundle
) -> None:
    stable = write_bundle(simple("stable"))
    _make_current(root, stable.digest)
    assert host.load_current().candidate is None


@pytest.mark.parametrize(
    "descriptor",
    [
        "not json",
        "[1, 2]",
        {"digest": "PRIMARY", "candidate": "CANDIDATE", "weight": 150},
        {"digest": "PRIMARY", "candidate": "CANDIDATE", "weight": True},
        {"digest": "PRIMARY", "candidate": "sha256:../../escape", "weight": 5},
        {"digest": "PRIMARY", "weight": 5},
    ],
    ids=["not-json", "not-an-object", "weight-over-100", "weight-bool", "path", "no-candidate"],
)
def test_a_malformed_descriptor_is_ignored_and_the_primary_still_starts(
    host: LogicHost, root: Path, write_bundle: WriteBundle, descriptor: Any
) -> None:
    stable, candidate = write_bundle(simple("stable")), write_bundle(simple("candidate"))
    _make_current(root, stable.digest)
    if isinstance(descriptor, dict):
        descriptor = {
            key: {"PRIMARY": stable.digest, "CANDIDATE": candidate.digest}.get(value, value)
            if isinstance(value, str)
            else value
            for key, value in descriptor.items()
        }
    _describe(root, descriptor)
    activation = host.load_current()
    assert (activation.digest, activation.candidate) == (stable.digest, None)


def test_an_unreadable_descriptor_is_ignored_and_the_primary_still_starts(
    host: LogicHost, root: Path, write_bundle: WriteBundle
) -> None:
    stable = write_bundle(simple("stable"))
    _make_current(root, stable.digest)
    (root / BUNDLE / SPLIT_FILE).mkdir()  # not a file at all
    assert host.load_current().candidate is None


def test_a_descriptor_written_for_another_primary_is_ignored(
    host: LogicHost, root: Path, write_bundle: WriteBundle
) -> None:
    # The agent writes the descriptor, then renames current: a start in between sees
    # the old primary with the next target's descriptor.
    old, new, candidate = (write_bundle(simple(n)) for n in ("old", "new", "candidate"))
    _make_current(root, old.digest)
    _describe(root, {"digest": new.digest, "candidate": candidate.digest, "weight": 5})
    activation = host.load_current()
    assert (activation.digest, activation.candidate) == (old.digest, None)
    assert read_split_descriptor(root / BUNDLE, primary=new.digest) is not None


def test_a_candidate_that_cannot_be_loaded_costs_the_split_not_the_start(
    host: LogicHost, root: Path, write_bundle: WriteBundle
) -> None:
    stable = write_bundle(simple("stable"))
    _make_current(root, stable.digest)
    missing = "sha256:" + "9" * 64
    _describe(root, {"digest": stable.digest, "candidate": missing, "weight": 5})
    activation = host.load_current()
    assert (activation.digest, activation.candidate) == (stable.digest, None)
    assert host.function("ident")() == "stable"


class _ReadOnlyMountSocket(socket.socket):
    """A socket whose bind fails the way it does on a read-only mount."""

    def bind(self, address: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system")


def test_a_socket_on_a_read_only_mount_fails_saying_how_to_fix_it(
    host: LogicHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol.socket, "socket", _ReadOnlyMountSocket)
    with pytest.raises(OSError, match="LOGICBUNDLE_SOCKET") as raised:
        serve(host, path=tmp_path / "sdk.sock")
    assert raised.value.errno == errno.EROFS
