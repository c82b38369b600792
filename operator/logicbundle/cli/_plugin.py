"""``kubectl-logicbundle``: the operators' sub-commands as a kubectl plugin.

kubectl runs the first executable on ``PATH`` named ``kubectl-logicbundle``
for ``kubectl logicbundle ...`` and passes it every argument after
``logicbundle``; its own global flags are not applied for it.  So the plugin
reads kubectl's ``-n/--namespace``, ``--kubeconfig`` and ``--context`` itself,
before or after the sub-command::

    kubectl logicbundle status rules -n shop
    kubectl logicbundle -n shop --context staging promote rules --wait

The sub-commands are exactly those of ``logicbundle`` (promote, abort, retry,
rollback, status, history), from :mod:`logicbundle.cli._actions`; exit codes too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from logicbundle import __version__
from logicbundle.cli import _actions
from logicbundle.errors import LogicBundleError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl logicbundle",
        parents=[_actions.connection_options(suppress=False)],
        description=(
            "Promote, abort, retry or roll back a LogicBundle's rollout, or show its status "
            "or history. "
            "-n/--namespace, --kubeconfig and --context work as in kubectl, before or after "
            "the sub-command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"logicbundle {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at debug level (default: warnings)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _actions.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kubectl-logicbundle`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        result: int = args.func(args)
    except LogicBundleError as exc:
        print(f"error: {exc.diagnostics()}", file=sys.stderr)
        return _actions.EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    raise SystemExit(main())
