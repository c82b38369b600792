"""Properties: packing is a function of content alone, and pack -> unpack is the identity.

Plus a fuzz property: whatever bytes arrive as a layer, unpacking either yields
exactly the manifest's files or raises an :class:`UnpackError` and leaves nothing.
"""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logicbundle.bundle import PackedBundle, UnpackError, pack_directory, unpack_bundle
from logicbundle.bundle._paths import collision_key

from .conftest import write_tree

_NAME_CHARS = st.characters(
    categories=["Ll", "Lu", "Nd"], min_codepoint=0x30, max_codepoint=0x17F
) | st.sampled_from("-_.")
_COMPONENT = st.text(_NAME_CHARS, min_size=1, max_size=8).filter(
    lambda c: not c.startswith(".") and not c.endswith((".pyc", ".pyo")) and c != "__pycache__"
)
_PATH = st.lists(_COMPONENT, min_size=1, max_size=3).map("/".join)


def _is_tree(paths: list[str]) -> bool:
    keys = {collision_key(p) for p in paths}
    if len(keys) != len(paths):
        return False
    directories = {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
    if len({collision_key(d) for d in directories}) != len(directories):
        return False  # "Ŕ/0" and "ŕ/1": one directory spelled twice (refused, tested apart)
    return not any(
        collision_key("/".join(p.split("/")[:i])) in keys
        for p in paths
        for i in range(1, p.count("/") + 1)
    )


TREES = st.dictionaries(_PATH, st.binary(max_size=2048), min_size=1, max_size=8).filter(
    lambda files: _is_tree(list(files))
)

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _pack(root: Path) -> PackedBundle:
    return pack_directory(
        root, name="prop", version="1", interface={"jsonSchema": {"type": "object"}}
    )


@SETTINGS
@given(files=TREES, data=st.data())
def test_packing_depends_only_on_names_contents_and_executable_bits(
    files: dict[str, bytes], data: st.DataObject
) -> None:
    executables = frozenset(data.draw(st.sets(st.sampled_from(sorted(files)))))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        first = write_tree(base / "a", files, executables=executables)
        # The same content written in the opposite order, with other permission noise.
        second = base / "b"
        write_tree(second, dict(reversed(list(files.items()))), executables=frozenset())
        for rel in files:
            (second / rel).chmod(0o711 if rel in executables else 0o600)
        one, two = _pack(first), _pack(second)
        assert one.layer == two.layer
        assert one.manifest == two.manifest
        assert _pack(first).layer == one.layer


@SETTINGS
@given(files=TREES, data=st.data())
def test_unpacking_a_packed_directory_gives_back_the_same_files(
    files: dict[str, bytes], data: st.DataObject
) -> None:
    executables = frozenset(data.draw(st.sets(st.sampled_from(sorted(files)))))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        bundle = _pack(write_tree(base / "src", files, executables=executables))
        out = base / "out"
        unpack_bundle(bundle.layer, manifest=bundle.manifest, destination=out, fsync=False)
        found = {
            p.relative_to(out).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in out.rglob("*")
            if p.is_file()
        }
        assert found == {
            rel: (content, 0o755 if rel in executables else 0o644) for rel, content in files.items()
        }


_REFERENCE: dict[str, bytes] = {"rules/a.txt": b"alpha\n" * 50, "rules/b.txt": b"beta\n"}


def _reference_bundle() -> PackedBundle:
    with tempfile.TemporaryDirectory() as tmp:
        return _pack(write_tree(Path(tmp) / "src", _REFERENCE, executables=frozenset()))


REFERENCE = _reference_bundle()


@settings(max_examples=150, deadline=None)
@given(
    position=st.integers(min_value=0, max_value=len(REFERENCE.layer) - 1),
    value=st.integers(min_value=0, max_value=255),
    cut=st.integers(min_value=0, max_value=len(REFERENCE.layer)),
)
def test_a_corrupted_layer_is_either_refused_cleanly_or_unpacks_exactly(
    position: int, value: int, cut: int
) -> None:
    damaged = bytearray(REFERENCE.layer[:cut] if cut < position else REFERENCE.layer)
    if position < len(damaged):
        damaged[position] = value
    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp)
        try:
            unpack_bundle(
                bytes(damaged),
                manifest=REFERENCE.manifest,
                destination=landing / "v1",
                fsync=False,
            )
        except UnpackError:
            assert list(landing.iterdir()) == []
        else:
            found = {
                p.relative_to(landing / "v1").as_posix(): p.read_bytes()
                for p in (landing / "v1").rglob("*")
                if p.is_file()
            }
            assert found == _REFERENCE


@settings(max_examples=100, deadline=None)
@given(layer=st.binary(max_size=4096))
def test_arbitrary_bytes_never_escape_as_anything_but_an_unpack_error(layer: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp)
        with pytest.raises(UnpackError):
            unpack_bundle(
                layer, manifest=REFERENCE.manifest, destination=landing / "v1", fsync=False
            )
        assert list(landing.iterdir()) == []
