"""Loading a version: isolated namespaces, the interface contract, the self-test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from logicbundle.sdk import (
    EntrypointError,
    InterfaceMismatchError,
    LogicHost,
    ManifestError,
    NoBundleLoadedError,
    SelfTestFailedError,
)
from tests.sdk.conftest import BUNDLE, IFACE, SIMPLE, WriteBundle, relative, simple


def test_two_digests_of_the_same_module_names_coexist_in_one_process(
    root: Path, write_bundle: WriteBundle
) -> None:
    one = write_bundle(relative("one"))
    two = write_bundle(relative("two"))
    first = LogicHost(name=BUNDLE, interface=IFACE, root=root)
    second = LogicHost(name=BUNDLE, interface=IFACE, root=root)
    first.activate(one.digest, one.path)
    second.activate(two.digest, two.path)
    assert first.function("ident")() == "one/deep"
    assert second.function("ident")() == "two/deep"
    bundle_modules = [m for m in sys.modules if m.startswith("_logicbundle_calc_")]
    assert {m.split(".", 1)[0] for m in bundle_modules} == {
        f"_logicbundle_calc_{one.digest[7:19]}",
        f"_logicbundle_calc_{two.digest[7:19]}",
    }
    assert "table" not in sys.modules
    assert "logic" not in sys.modules
    first.close(timeout=5)
    second.close(timeout=5)
    assert not [m for m in sys.modules if m.startswith("_logicbundle_calc_")]


def test_loading_writes_no_bytecode_into_the_version_directory(
    host: LogicHost, write_bundle: WriteBundle
) -> None:
    one = write_bundle(relative("one"))
    host.activate(one.digest, one.path)
    assert host.function("ident")() == "one/deep"
    assert not list(one.path.rglob("__pycache__"))


def test_calls_before_any_activation_raise_no_bundle_loaded(host: LogicHost) -> None:
    with pytest.raises(NoBundleLoadedError, match="before any version"):
        host.function("ident")()


def test_a_function_outside_the_declared_interface_cannot_be_asked_for(host: LogicHost) -> None:
    with pytest.raises(KeyError, match="not a function of the declared interface"):
        host.function("missing")


def test_a_bundle_built_for_another_interface_is_refused_and_the_old_version_keeps_serving(
    host: LogicHost, write_bundle: WriteBundle
) -> None:
    good = write_bundle(simple("good"))
    host.activate(good.digest, good.path)
    other = {"functions": {**IFACE["functions"], "extra": {}}}
    bad = write_bundle(simple("bad"), interface=other)
    with pytest.raises(InterfaceMismatchError, match="the application declares sha256:") as info:
        host.activate(bad.digest, bad.path)
    assert info.value.reason == "InterfaceMismatch"
    assert host.active_digest == good.digest
    assert host.function("ident")() == "good"
    assert host.stats()["activations"] == {"ok": 1, "refused": 1}


@pytest.mark.parametrize(
    ("selftest", "message"),
    [
        ("    def selftest(self):\n        raise ValueError('melons are free')\n", "melons"),
        ("    def selftest(self):\n        return False\n", "returned False"),
    ],
)
def test_a_failing_selftest_refuses_the_version(
    host: LogicHost, write_bundle: WriteBundle, selftest: str, message: str
) -> None:
    good = write_bundle(simple("good"))
    host.activate(good.digest, good.path)
    source = SIMPLE.format(name="bad").replace("logic = Logic()", selftest + "\nlogic = Logic()")
    bad = write_bundle({"logic.py": source})
    with pytest.raises(SelfTestFailedError, match=message):
        host.activate(bad.digest, bad.path)
    assert host.function("ident")() == "good"
    assert not [m for m in sys.modules if m.startswith(f"_logicbundle_calc_{bad.digest[7:19]}")]


def test_a_selftest_past_its_deadline_refuses_the_version(
    root: Path, write_bundle: WriteBundle
) -> None:
    source = SIMPLE.format(name="slow").replace(
        "logic = Logic()",
        "    def selftest(self):\n"
        "        import threading\n"
        "        threading.Event().wait(5)\n"
        "logic = Logic()",
    )
    slow = write_bundle({"logic.py": source})
    host = LogicHost(name=BUNDLE, interface=IFACE, root=root, selftest_timeout=0.05)
    with pytest.raises(SelfTestFailedError, match="did not finish within"):
        host.activate(slow.digest, slow.path)


def test_a_bundle_missing_a_declared_function_is_refused(
    host: LogicHost, write_bundle: WriteBundle
) -> None:
    source = "class Logic:\n    def ident(self):\n        return 'x'\nlogic = Logic()\n"
    bad = write_bundle({"logic.py": source})
    with pytest.raises(EntrypointError, match="does not provide the declared function 'add'"):
        host.activate(bad.digest, bad.path)


def test_a_function_whose_parameters_differ_from_the_declaration_is_refused(
    host: LogicHost, write_bundle: WriteBundle
) -> None:
    bad = write_bundle(
        {"logic.py": SIMPLE.format(name="x").replace("add(self, a, b)", "add(self, x, y)")}
    )
    with pytest.raises(EntrypointError, match=r"add\(x, y\) does not match"):
        host.activate(bad.digest, bad.path)


def test_an_entrypoint_that_fails_to_import_is_refused_with_the_cause(
    host: LogicHost, write_bundle: WriteBundle
) -> None:
    bad = write_bundle({"logic.py": "import rates\n"})
    with pytest.raises(EntrypointError, match=r"(?s)ModuleNotFoundError.*relatively"):
        host.activate(bad.digest, bad.path)


def test_a_missing_manifest_is_refused(host: LogicHost, write_bundle: WriteBundle) -> None:
    one = write_bundle(simple("one"))
    one.path.with_name(one.path.name + ".manifest.json").unlink()
    with pytest.raises(ManifestError, match="cannot read the bundle manifest"):
        host.activate(one.digest, one.path)


def test_a_rollback_reads_no_manifest_again_but_a_gone_or_rewritten_one_is_noticed(
    host: LogicHost, write_bundle: WriteBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    from logicbundle.sdk import _manifest

    reads: list[Path] = []
    real = _manifest.read_manifest

    def counting(path: Path) -> _manifest.ManifestInfo:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(_manifest, "read_manifest", counting)
    one, two = write_bundle(simple("one")), write_bundle(simple("two"))
    for version in (one, two, one, two):
        host.activate(version.digest, version.path)
    assert len(reads) == 2  # once per digest: the rollbacks do no file I/O, JSON or hashing
    manifest = one.path.with_name(one.path.name + ".manifest.json")
    rewritten = manifest.with_name("rewritten.json")
    rewritten.write_text(manifest.read_text().replace('"1.0.0"', '"1.0.1"'))
    rewritten.replace(manifest)
    assert host.activate(one.digest, one.path).digest == one.digest
    assert len(reads) == 3
    host.activate(two.digest, two.path)
    manifest.unlink()
    with pytest.raises(ManifestError, match="cannot read the bundle manifest"):
        host.activate(one.digest, one.path)


def test_load_current_follows_the_current_symlink(
    host: LogicHost, root: Path, write_bundle: WriteBundle
) -> None:
    one = write_bundle(simple("one"))
    (root / BUNDLE / "current").symlink_to(Path(".versions") / one.digest)
    activation = host.load_current()
    assert activation.digest == one.digest
    assert host.function("ident")() == "one"


def test_a_bundle_packed_and_unpacked_by_the_bundle_package_loads(tmp_path: Path) -> None:
    from examples.sample_app.bundles import EXAMPLES_DIR, INTERFACE, install

    installed = install(EXAMPLES_DIR / "pricing-v1", root=tmp_path, make_current=True)
    host = LogicHost(name="pricing", interface=INTERFACE, root=tmp_path)
    assert host.load_current().digest == installed.digest
    assert host.function("price")("apple", 2) == 1.0
    assert host.function("price")(item="melon", qty=10) == 18.0
    host.close(timeout=5)
