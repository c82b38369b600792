"""The sample application's interface, and a local installer for its example bundles.

``install`` does on one machine what the reload agent does in a pod: pack a
bundle directory (with :mod:`logicbundle.bundle`), unpack it into
``<root>/<bundle>/.versions/<digest>/``, write the manifest next to it as
``<digest>.manifest.json`` and, if asked, point ``current`` at it with a
temporary symlink and ``rename(2)``.  The digest is the layer's sha256, a
stand-in for the artifact digest the operator assigns.  Needs pydantic (the
bundle package); the application itself does not.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

EXAMPLES_DIR: Final = Path(__file__).resolve().parent.parent / "bundles"
BUNDLE_NAME: Final = "pricing"
ENTRYPOINT: Final = "pricing:logic"

INTERFACE: Final[dict[str, Any]] = {
    "functions": {
        "price": {
            "params": [
                {"name": "item", "type": "str"},
                {"name": "qty", "type": "int"},
            ],
            "returns": "float",
        }
    }
}
"""What the sample application calls; every example bundle implements it."""

VERSIONS: Final = {
    "pricing-v1": "1.0.0",
    "pricing-v2": "2.0.0",
    "pricing-bad-selftest": "2.0.1-bad",
    "pricing-flaky": "2.1.0-flaky",
    "pricing-slow": "2.2.0-slow",
    "pricing-hungry": "2.3.0-hungry",
}


@dataclass(frozen=True)
class Installed:
    digest: str
    path: Path
    manifest: Path


def install(
    source: Path,
    *,
    root: Path,
    bundle: str = BUNDLE_NAME,
    version: str | None = None,
    make_current: bool = False,
) -> Installed:
    """Pack ``source`` and unpack it under ``root`` as the agent would; idempotent per digest."""
    from logicbundle.bundle import pack_directory, unpack_bundle  # noqa: PLC0415 - needs pydantic

    packed = pack_directory(
        source,
        name=bundle,
        version=version or VERSIONS.get(source.name, "0.0.0"),
        interface=INTERFACE,
        entrypoint=ENTRYPOINT,
    )
    digest = packed.layer_digest
    versions = root / bundle / ".versions"
    versions.mkdir(parents=True, exist_ok=True)
    path = versions / digest
    manifest = versions / f"{digest}.manifest.json"
    if not path.exists():
        unpack_bundle(packed.layer, manifest=packed.manifest, destination=path, fsync=False)
    if not manifest.exists():
        temporary = manifest.with_name(manifest.name + ".tmp")
        temporary.write_bytes(packed.manifest.to_json())
        temporary.replace(manifest)
    if make_current:
        flip_current(root / bundle, path)
    return Installed(digest=digest, path=path, manifest=manifest)


def flip_current(bundle_dir: Path, target: Path) -> None:
    """Point ``bundle_dir/current`` at ``target`` atomically (symlink + rename)."""
    temporary = bundle_dir / ".current.tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(os.path.relpath(target, bundle_dir))
    temporary.replace(bundle_dir / "current")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("install", help="install a bundle directory under a root")
    cmd.add_argument("source", type=Path)
    cmd.add_argument("--root", type=Path, required=True)
    cmd.add_argument("--bundle", default=BUNDLE_NAME)
    cmd.add_argument("--current", action="store_true", help="also point `current` at it")
    args = parser.parse_args(argv)
    installed = install(args.source, root=args.root, bundle=args.bundle, make_current=args.current)
    print(installed.digest, installed.path)


if __name__ == "__main__":
    main()
