"""``kubectl-logicbundle``: the operators' sub-commands as a kubectl plugin.

kubectl runs the first executable on ``PATH`` named ``kubectl-logicbundle``
for ``kubectl logicbundle ...`` and passes it every argument after
``logicbundle``; its own global flags are not applied for it.  So the plugin
reads kubectl's ``-n/--namespace``, ``--kubeconfig`` and ``--context`` itself,
before or after the sub-command::

    kubectl logicbundle status rules -n shop
    kubectl logicbundle -n shop --context staging promote rules --wait

The sub-commands are exactly those of ``logicbundle`` (promote, abort, retry,
rollback, status, history, completion), from :mod:`logicbundle.cli._actions`;
exit codes and failure reports (:mod:`logicbundle.cli._errors`) too.

``kubectl logicbundle <Tab>`` completes through ``kubectl_complete-logicbundle``,
the same wheel's second executable (:func:`complete_main`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from logicbundle import __version__
from logicbundle.cli import _actions, _completion, _errors

__all__ = ["build_parser", "complete_main", "main"]


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
        "-v",
        "--verbose",
        action="store_true",
        help="log at debug level and show the traceback of a failure (default: warnings)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verbosity = _errors.verbosity_options()
    _actions.add_parsers(sub, verbosity=verbosity)
    _completion.add_parser(sub, verbosity=verbosity, build=build_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kubectl-logicbundle`` console script."""
    args = build_parser().parse_args(argv)
    _errors.configure_logging(
        verbose=args.verbose, daemon=False, fmt="%(levelname)s %(name)s: %(message)s"
    )
    return _errors.run(args.func, args, verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())


def complete_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kubectl_complete-logicbundle``: kubectl's plugin completion protocol.

    kubectl runs it with the words after ``logicbundle``, the last being the
    one typed so far (empty for a new word), and reads the candidates, one per
    line, then ``:<directive>`` (:func:`logicbundle.cli._completion.cobra_answer`).
    """
    words = list(sys.argv[1:] if argv is None else argv)
    sys.stdout.write(_completion.cobra_answer(build_parser(), words))
    return 0
