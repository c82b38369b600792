"""``logicbundle agent``: parse the flags, load the configuration, run until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from logicbundle.agent._errors import AgentError
from logicbundle.contract import AGENT_CONFIG_ENV

EXIT_OK = 0
EXIT_FAILURE = 1


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The agent's flags, on ``parser`` (the CLI's sub-parser) or a parser of its own."""
    parser = parser or argparse.ArgumentParser(
        prog="logicbundle agent", description="Run the in-pod reload agent until SIGTERM."
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"the configuration document (wins over ${AGENT_CONFIG_ENV})",
    )
    return parser


def run(config_path: Path | None) -> int:
    """Run the agent with the configuration from ``config_path`` or the environment."""
    from logicbundle.agent._agent import Agent  # noqa: PLC0415 - `--help` stays instant
    from logicbundle.agent._config import load_config  # noqa: PLC0415

    log = logging.getLogger("logicbundle.agent")
    try:
        config = load_config(config_path)
        agent = Agent(config, report_interval=config.report_interval)
        agent.start()
    except (AgentError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        agent._stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "agent started: %d bundle(s), distributor %s, listening on %s",
        len(config.bundles),
        config.distributor or "(none: slow path only)",
        config.listen,
    )
    agent.wait()
    agent.stop()
    log.info("agent stopped")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``logicbundle agent`` and ``python -m logicbundle.agent``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("LOGICBUNDLE_AGENT_DEBUG") else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return run(args.config)
