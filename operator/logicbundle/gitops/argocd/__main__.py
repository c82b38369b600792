"""``python -m logicbundle.gitops.argocd``: print the ``argocd-cm`` patch for ``LogicBundle``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from logicbundle.gitops.argocd import configmap_patch, render_configmap_patch


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m logicbundle.gitops.argocd",
        description=(
            "Print the argocd-cm ConfigMap patch with the LogicBundle health check and "
            "resource actions (promote, abort, retry)."
        ),
    )
    parser.add_argument(
        "-n",
        "--namespace",
        default="argocd",
        help="namespace of argocd-cm written in the patch; empty for none (default: %(default)s)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("yaml", "json"),
        default="yaml",
        help="yaml (default; the scripts as literal blocks) or json",
    )
    args = parser.parse_args(argv)
    if args.output == "json":
        print(json.dumps(configmap_patch(namespace=args.namespace or None), indent=2))
    else:
        sys.stdout.write(render_configmap_patch(namespace=args.namespace or None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
