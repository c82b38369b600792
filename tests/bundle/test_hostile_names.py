"""Names a tar reader and a person could read differently, and manifests parsers could (issue 11).

The rows of "Hostile input, the rows still missing": a pax ``path`` or GNU long
name that disagrees with the header name, a GNU long name that traverses, a
global pax header that renames members, control and bidirectional characters
in file names, 255- and 256-byte name components, and a key given twice in
the manifest's JSON.  Each refusal has its own test; so does each honest
spelling that must still pass.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from logicbundle.bundle import (
    AmbiguousNameError,
    InvalidManifestError,
    InvalidPathError,
    PathTraversalError,
    pack_directory,
    parse_manifest,
    unpack_bundle,
)

from . import hostile_corpus as corpus
from .test_unpack_hostile import assert_nothing_escaped, refuse


def _unpacks(layer: bytes, files: dict[str, bytes], landing: Path) -> Path:
    unpacked = unpack_bundle(
        layer, manifest=corpus.manifest_for(files), destination=landing / "v1", fsync=False
    )
    for path, data in files.items():
        assert (unpacked.path / path).read_bytes() == data
    return unpacked.path


# --- a pax path that disagrees with the header name ---------------------------------------------


def test_a_pax_path_naming_another_file_than_its_header_is_refused(landing: Path) -> None:
    error = refuse(corpus.pax_path_disagrees(), landing)
    assert "'ok.txt'" in str(error)
    assert "another file" in str(error)


def test_a_traversing_header_name_hidden_behind_a_harmless_pax_path_is_refused(
    landing: Path,
) -> None:
    error = refuse(corpus.pax_hides_a_traversing_header(), landing)
    assert "header name '../escaped.txt' names another file" in str(error)
    assert_nothing_escaped(landing)


def test_a_traversing_pax_path_behind_a_harmless_header_is_refused(landing: Path) -> None:
    refuse(corpus.pax_path_traverses(), landing)
    assert_nothing_escaped(landing)


def test_a_header_cut_from_the_pax_path_that_itself_traverses_is_refused(landing: Path) -> None:
    # A true cut of the name (its first 100 bytes), but a reader that ignores pax
    # would climb out with it: "ddd.../.." instead of "ddd.../..x.txt".
    full = "d" * 97 + "/..x.txt"
    header = full.encode()[:100].decode()
    assert header.endswith("/..")
    case = corpus.HostileBundle(
        name="pax_cut_traverses",
        layer=corpus.build_layer([corpus.entry(header, b"x", pax={"path": full})]),
        manifest=corpus.manifest_for({full: b"x"}),
        expected=AmbiguousNameError,
    )
    assert "is itself refused" in str(refuse(case, landing))


def test_a_global_pax_header_that_sets_a_path_is_refused(landing: Path) -> None:
    assert "global pax header sets path" in str(refuse(corpus.global_pax_path(), landing))


def test_the_stand_ins_honest_writers_put_in_the_header_unpack(landing: Path) -> None:
    # Python's pax writer: non-ASCII letters as "?", long names cut to 100 bytes.
    files = {
        "café/crème.txt": b"accents",
        "long/" + "n" * 150 + ".txt": b"long",
        "long/" + "é" * 60 + ".txt": b"long and not ASCII",
    }
    layer = corpus.build_layer(corpus.entry(path, data) for path, data in files.items())
    _unpacks(layer, files, landing)


def test_a_bundle_packed_with_long_and_non_ascii_names_round_trips(
    tmp_path: Path, landing: Path
) -> None:
    source = tmp_path / "src"
    names = ["ünïcode.json", "d" * 120 + "/x.json", "é" * 126 + ".js"]  # the last: 255 bytes
    for name in names:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(b"{}")
    packed = pack_directory(
        source, name="names", version="1.0.0", interface={"jsonSchema": {"type": "object"}}
    )
    unpack_bundle(packed.layer, manifest=packed.manifest, destination=landing / "v1", fsync=False)
    root = landing / "v1"
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert found == sorted(names)


# --- GNU long names ----------------------------------------------------------------------------


def test_a_gnu_long_name_that_traverses_is_refused(landing: Path) -> None:
    refuse(corpus.gnu_long_name_traverses(), landing)
    assert_nothing_escaped(landing)


def test_a_long_gnu_long_name_that_traverses_is_refused(landing: Path) -> None:
    # Longer than the header field: what GNU tar's own long-name records are for.
    long_name = "d" * 120 + "/../../../escaped.txt"
    layer = corpus.build_layer([corpus.entry(long_name, b"pwned")], fmt=tarfile.GNU_FORMAT)
    case = corpus.HostileBundle(
        name="gnu_long_name_traverses_far",
        layer=layer,
        manifest=corpus.manifest_for({"ok.txt": b"pwned"}),
        expected=PathTraversalError,
    )
    refuse(case, landing)
    assert_nothing_escaped(landing)


def test_a_gnu_long_name_naming_another_file_than_its_header_is_refused(landing: Path) -> None:
    refuse(corpus.gnu_long_name_disagrees(), landing)


def test_a_gnu_long_name_whose_header_holds_its_first_100_bytes_unpacks(landing: Path) -> None:
    long_name = "g" * 150 + ".txt"
    layer = corpus.build_layer([corpus.entry(long_name, b"gnu")], fmt=tarfile.GNU_FORMAT)
    _unpacks(layer, {long_name: b"gnu"}, landing)


# --- control and bidirectional characters --------------------------------------------------------


HIDDEN = {
    "right_to_left_override": "evil\u202etxt.py",  # shows as "evilyp.txt"
    "first_strong_isolate": "a\u2068b.txt",
    "left_to_right_mark": "rules\u200e.py",
    "arabic_letter_mark": "x\u061c.txt",
    "c1_control_csi": "term\x9b31m.txt",  # a terminal escape in C1 form
    "c1_next_line": "a\x85b.txt",
    "line_separator": "a\u2028b.txt",
    "paragraph_separator": "a\u2029b.txt",
}


@pytest.mark.parametrize("name", sorted(HIDDEN))
def test_a_member_name_with_a_control_or_bidirectional_character_is_refused(
    name: str, landing: Path
) -> None:
    case = corpus.HostileBundle(
        name=name,
        layer=corpus.build_layer(
            [corpus.entry("ok.txt", corpus.OK_CONTENT), corpus.entry(HIDDEN[name], b"x")]
        ),
        manifest=corpus.manifest_for({"ok.txt": corpus.OK_CONTENT}),
        expected=InvalidPathError,
    )
    error = refuse(case, landing)
    assert f"U+{ord(next(c for c in HIDDEN[name] if not c.isprintable())):04X}" in str(error)
    assert HIDDEN[name] not in str(error), "the message must not carry the character itself"


@pytest.mark.parametrize("name", sorted(HIDDEN))
def test_a_manifest_listing_a_name_with_a_control_or_bidirectional_character_is_refused(
    name: str,
) -> None:
    with pytest.raises(InvalidManifestError, match="forbidden characters"):
        corpus.manifest_for({HIDDEN[name]: b"x"})


def test_names_in_other_scripts_and_joiners_stay_allowed(landing: Path) -> None:
    # Zero-width non-joiner is part of Persian spelling; emoji use the joiner.
    files = {"قواعد.json": b"{}", "می\u200cخواهم.txt": b"x", "👩\u200d💻.txt": b"y"}
    layer = corpus.build_layer(corpus.entry(path, data) for path, data in files.items())
    _unpacks(layer, files, landing)


# --- 255 and 256 bytes ---------------------------------------------------------------------------


def test_a_source_file_named_with_255_bytes_packs_and_unpacks(
    tmp_path: Path, landing: Path
) -> None:
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    name = "é" * 126 + "abc"  # 255 bytes in UTF-8
    assert len(name.encode()) == 255
    (source / "d" / name).write_bytes(b"edge")
    packed = pack_directory(
        source, name="edge", version="1.0.0", interface={"jsonSchema": {"type": "object"}}
    )
    assert packed.manifest.files[0].path == f"d/{name}"
    unpack_bundle(packed.layer, manifest=packed.manifest, destination=landing / "v1", fsync=False)
    assert (landing / "v1" / "d" / name).read_bytes() == b"edge"


def test_a_manifest_naming_a_256_byte_component_says_which_and_why() -> None:
    with pytest.raises(InvalidManifestError) as refused:
        corpus.manifest_for({"d/" + "é" * 128: b"x"})
    assert "is 256 bytes, more than 255" in str(refused.value)


# --- a key given twice in the manifest's JSON ----------------------------------------------------


def _manifest_json() -> bytes:
    return corpus.manifest_for({"ok.txt": corpus.OK_CONTENT}).to_json()


def test_a_top_level_key_given_twice_is_refused() -> None:
    data = _manifest_json()
    twice = data.replace(b'"name":"hostile"', b'"name":"hostile","name":"other"', 1)
    assert json.loads(twice)["name"] == "other"  # what a last-wins parser would take
    with pytest.raises(InvalidManifestError, match="'name' appears twice"):
        parse_manifest(twice)


def test_a_file_entry_with_its_path_given_twice_is_refused() -> None:
    data = _manifest_json()
    sha = hashlib.sha256(corpus.OK_CONTENT).hexdigest()
    twice = data.replace(b'"path":"ok.txt"', b'"path":"ok.txt","path":"rules.txt"', 1)
    assert sha.encode() in twice
    with pytest.raises(InvalidManifestError, match="'path' appears twice"):
        parse_manifest(twice)


def test_a_label_given_twice_is_refused() -> None:
    base = json.loads(_manifest_json())
    base["labels"] = {"team": "a"}
    data = json.dumps(base).encode().replace(b'"team": "a"', b'"team": "a", "team": "b"')
    with pytest.raises(InvalidManifestError, match="'team' appears twice"):
        parse_manifest(data)


def test_a_manifest_with_each_key_once_still_parses_from_bytes() -> None:
    assert parse_manifest(_manifest_json()).files[0].path == "ok.txt"
