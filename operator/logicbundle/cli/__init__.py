"""The ``logicbundle`` command.

Sub-commands import what they need only when they run, so ``logicbundle
agent`` in every pod never loads kopf or the Kubernetes client.

``--help`` lists the user commands (pack, push, sign, verify, inspect, status,
history, promote, abort, retry, rollback, completion, version) apart from the
daemons (operator, distributor, agent), which the chart runs in the cluster.
Failures are one line on stderr and a documented exit code
(:mod:`logicbundle.cli._errors`); ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from logicbundle import __version__
from logicbundle.cli import _actions, _bundles, _completion, _errors

if TYPE_CHECKING:
    from logicbundle.controller import ReplicaSettings

__all__ = ["build_parser", "main"]

EXIT_OK = _errors.EXIT_OK
EXIT_FAILURE = _errors.EXIT_FAILURE
EXIT_USAGE = _errors.EXIT_USAGE
EXIT_VERIFICATION_FAILED = _errors.EXIT_VERIFICATION_FAILED

DAEMONS: Final = {
    "operator": "the operator: reconciles LogicBundles, serves the webhook and the distributor",
    "distributor": "a distributor replica: agents' long-polls, bytes and reports (scales out)",
    "agent": "the in-pod reload agent (config: $LOGICBUNDLE_AGENT_CONFIG)",
}
"""The long-running processes the chart starts, listed apart from the user commands."""


def _cmd_version(args: argparse.Namespace) -> int:
    _bundles.emit(args, {"version": __version__}, __version__)
    return EXIT_OK


DEFAULT_AGENT_ID = 65532
"""The agent's user and group id unless told otherwise (the image's non-root user)."""


def _agent_id(text: str) -> int | None:
    """``--agent-run-as-user/group``: a positive id, or ``none`` (the platform decides)."""
    if text == "none":
        return None
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"wants a non-root numeric id or none, not {text!r}")
    return int(text)


def _is_resources(value: object) -> bool:
    """Whether ``value`` is a container ``resources`` map: requests/limits of strings."""
    return (
        isinstance(value, dict)
        and set(value) <= {"requests", "limits"}
        and all(
            isinstance(kinds, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in kinds.items())
            for kinds in value.values()
        )
    )


def _paired_flags(args: argparse.Namespace) -> str | None:
    """What is wrong with flags that go in pairs (None: nothing)."""
    if bool(args.pod_name) != bool(args.pod_namespace):
        return "--pod-name and --pod-namespace ($POD_NAME, $POD_NAMESPACE) go together"
    if bool(args.distributor_tls_cert) != bool(args.distributor_tls_key):
        return "--distributor-tls-cert and --distributor-tls-key go together"
    return None


def _cmd_operator(args: argparse.Namespace) -> int:
    problem = _paired_flags(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    from logicbundle.api.namespaces import ServedNamespaces
    from logicbundle.controller import OperatorSettings, WebhookSettings, run_operator

    served = ServedNamespaces.of(
        named=args.namespace,
        operator_namespace=args.operator_namespace,
        exclude=args.exclude_namespace,
    )
    tls = None
    if args.distributor_tls_cert:
        tls = (Path(args.distributor_tls_cert), Path(args.distributor_tls_key))
    webhook = None
    if args.webhook_port is not None:
        if not args.agent_image:
            print("error: --webhook-port needs --agent-image", file=sys.stderr)
            return EXIT_USAGE
        ca = Path(args.distributor_ca_file).read_text() if args.distributor_ca_file else None
        agent_env = []
        for item in args.agent_env:
            name, sep, value = item.partition("=")
            if not sep or not name:
                print(f"error: --agent-env wants NAME=VALUE, not {item!r}", file=sys.stderr)
                return EXIT_USAGE
            agent_env.append((name, value))
        agent_resources = None
        if args.agent_resources:
            try:
                agent_resources = json.loads(args.agent_resources)
            except ValueError:
                agent_resources = None
            if not _is_resources(agent_resources):
                print(
                    "error: --agent-resources wants a JSON object like "
                    '{"requests": {"memory": "32Mi"}, "limits": {"memory": "96Mi"}}',
                    file=sys.stderr,
                )
                return EXIT_USAGE
        webhook = WebhookSettings(
            port=args.webhook_port,
            host=args.webhook_host,
            operator_namespace=args.operator_namespace,
            service_name=args.webhook_service,
            agent_image=args.agent_image,
            agent_env=tuple(agent_env),
            agent_resources=agent_resources,
            agent_run_as_user=args.agent_run_as_user,
            agent_run_as_group=args.agent_run_as_group,
            agent_image_pull_policy=args.agent_image_pull_policy,
            distributor_url=args.agent_distributor_url or "",
            distributor_ca_pem=ca,
            url=args.webhook_url,
            served=served,
        )
    replicas = _replica_settings(args)
    if isinstance(replicas, int):
        return replicas
    return run_operator(
        OperatorSettings(
            namespaces=tuple(args.namespace),
            served=served,
            liveness_endpoint=args.liveness,
            peering_name=args.peering,
            pod_name=args.pod_name or None,
            pod_namespace=args.pod_namespace or None,
            cache_dir=Path(args.cache_dir) if args.cache_dir else None,
            distributor_host=args.distributor_host,
            distributor_port=args.distributor_port,
            distributor_tls=tls,
            distributor_insecure_http=args.distributor_insecure_http,
            metrics_host=args.metrics_host,
            metrics_port=args.metrics_port,
            webhook=webhook,
            replicas=replicas,
            startup_timeout=args.startup_timeout,
        )
    )


def _replica_settings(args: argparse.Namespace) -> ReplicaSettings | int | None:
    """The operator's distributor-replica flags (an exit code when they are wrong)."""
    from logicbundle.controller import ReplicaSettings

    accounts = _identities(args.distributor_service_account, "--distributor-service-account")
    readers = _identities(args.status_reader_service_account, "--status-reader-service-account")
    if accounts is None or readers is None:
        return EXIT_USAGE
    if args.distributor_replica and args.distributor_service:
        print(
            "error: --distributor-replica and --distributor-service exclude each other",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not (args.distributor_replica or args.distributor_service or accounts or readers):
        return None
    return ReplicaSettings(
        urls=tuple(args.distributor_replica),
        service=args.distributor_service,
        namespace=args.operator_namespace,
        accounts=accounts,
        readers=readers,
        token_file=Path(args.replica_token_file),
        ca_file=Path(args.replica_ca_file) if args.replica_ca_file else None,
        server_name=args.replica_server_name,
    )


def _identity(value: str, flag: str) -> tuple[str, str] | None:
    """``namespace:serviceaccount``, or None (and a message) when it is not that."""
    namespace, sep, account = value.partition(":")
    if not sep or not namespace or not account or ":" in account:
        print(f"error: {flag} wants NAMESPACE:SERVICEACCOUNT, not {value!r}", file=sys.stderr)
        return None
    return namespace, account


def _identities(values: Sequence[str], flag: str) -> tuple[tuple[str, str], ...] | None:
    """Every ``NAMESPACE:NAME`` of a repeatable flag (None, said why, when one is not)."""
    found = []
    for value in values:
        identity = _identity(value, flag)
        if identity is None:
            return None
        found.append(identity)
    return tuple(found)


def _cmd_distributor(args: argparse.Namespace) -> int:
    from logicbundle.distributor import DistributorSettings, run_distributor

    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        print("error: --tls-cert-file and --tls-key-file go together", file=sys.stderr)
        return EXIT_USAGE
    if not args.tls_cert_file and not args.insecure_http:
        print("error: the distributor needs --tls-cert-file and --tls-key-file", file=sys.stderr)
        return EXIT_USAGE
    operators = _identities(args.operator_service_account, "--operator-service-account")
    readers = _identities(args.status_reader_service_account, "--status-reader-service-account")
    if operators is None or readers is None:
        return EXIT_USAGE
    return run_distributor(
        DistributorSettings(
            cache_dir=Path(args.cache_dir),
            host=args.host,
            port=args.port,
            tls_cert_file=Path(args.tls_cert_file) if args.tls_cert_file else None,
            tls_key_file=Path(args.tls_key_file) if args.tls_key_file else None,
            insecure_http=args.insecure_http,
            namespaces=tuple(args.namespace),
            excluded_namespaces=tuple(args.exclude_namespace),
            upstream_url=args.upstream or None,
            upstream_ca_file=Path(args.upstream_ca_file) if args.upstream_ca_file else None,
            upstream_server_name=args.upstream_server_name,
            token_file=Path(args.token_file),
            operator_identities=operators,
            reader_identities=readers,
        )
    )


def _cmd_agent(args: argparse.Namespace) -> int:
    from logicbundle.agent import run

    result: int = run(args.config)
    return result


def _add_distributor_parser(sub: Any) -> None:  # argparse's subparsers action is private
    dist = sub.add_parser(
        "distributor",
        parents=[_errors.verbosity_options()],
        description="Serve agents until SIGTERM or SIGINT. Stateless: every replica computes "
        "each pod's targets from the LogicBundles' published states and the pods' own facts, "
        "fetches verified bytes from the operator once per digest, and keeps the reports of "
        "the agents that talk to it, summed for the operator.",
    )
    dist.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default: the whole cluster)",
    )
    dist.add_argument(
        "--exclude-namespace",
        action="append",
        default=[],
        metavar="NAMESPACE",
        help="leave this namespace out of the cluster-wide watch (repeatable; kube-system, "
        "kube-public and kube-node-lease always are; the chart adds the operator's)",
    )
    dist.add_argument("--host", default=None, help="address to bind (default: all)")
    dist.add_argument("--port", type=int, default=8443, help="port (default %(default)s)")
    dist.add_argument("--tls-cert-file", help="PEM certificate served to agents")
    dist.add_argument("--tls-key-file", help="PEM private key of that certificate")
    dist.add_argument(
        "--insecure-http",
        action="store_true",
        help="serve plain HTTP (tokens in clear: local tests only)",
    )
    dist.add_argument(
        "--cache-dir", required=True, help="where verified bundles are cached (an emptyDir)"
    )
    dist.add_argument(
        "--upstream",
        metavar="URL",
        help="the operator's distributor, where the bytes of published digests come from",
    )
    dist.add_argument("--upstream-ca-file", help="PEM CA of the operator's distributor")
    dist.add_argument(
        "--upstream-server-name",
        help="the name in the operator's certificate, when --upstream uses another",
    )
    dist.add_argument(
        "--token-file",
        default="/var/run/secrets/logicbundle/token",
        help="this replica's projected token, shown to the operator (default %(default)s)",
    )
    dist.add_argument(
        "--operator-service-account",
        action="append",
        default=[],
        metavar="NAMESPACE:NAME",
        help="the operator's ServiceAccount, which may read the agents' summed reports "
        "(repeatable)",
    )
    dist.add_argument(
        "--status-reader-service-account",
        action="append",
        default=[],
        metavar="NAMESPACE:NAME",
        help="a ServiceAccount whose tokens may read each pod's report (`logicbundle status "
        "--pods`; repeatable)",
    )
    dist.set_defaults(func=_cmd_distributor)


def _add_replica_flags(operator: argparse.ArgumentParser) -> None:
    replicas = operator.add_argument_group("distributor replicas (logicbundle distributor)")
    replicas.add_argument(
        "--distributor-replica",
        action="append",
        default=[],
        metavar="URL",
        help="a distributor replica whose agents' reports the operator reads (repeatable; "
        "local runs)",
    )
    replicas.add_argument(
        "--distributor-service",
        metavar="NAME",
        help="the replicas' Service in --operator-namespace, found through its EndpointSlices",
    )
    replicas.add_argument(
        "--distributor-service-account",
        action="append",
        default=[],
        metavar="NAMESPACE:NAME",
        help="the replicas' ServiceAccount, which may fetch published digests (repeatable)",
    )
    replicas.add_argument(
        "--status-reader-service-account",
        action="append",
        default=[],
        metavar="NAMESPACE:NAME",
        help="a ServiceAccount whose tokens may read each pod's report from this operator's "
        "distributor (`logicbundle status --pods`; repeatable)",
    )
    replicas.add_argument(
        "--replica-token-file",
        default="/var/run/secrets/logicbundle/token",
        help="the operator's projected token shown to the replicas (default %(default)s)",
    )
    replicas.add_argument("--replica-ca-file", help="PEM CA of the replicas' certificate")
    replicas.add_argument(
        "--replica-server-name",
        help="the name in the replicas' certificate (they are reached by address)",
    )


def _daemons_epilog() -> str:
    width = max(len(name) for name in DAEMONS) + 2
    lines = ["daemons (run in the cluster by the chart, not by hand):"]
    lines += [f"  {name:<{width}}{text}" for name, text in DAEMONS.items()]
    lines.append("")
    lines.append("Exit codes: 0 done, 1 failed, 2 usage, 3 verification failed (docs/cli.md).")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logicbundle",
        description="Hot-reload signed logic bundles inside running pods, in stages.",
        epilog=_daemons_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"logicbundle {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log at debug level and show the traceback of a failure (default: warnings "
        "for user commands, info for daemons)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    verbosity = _errors.verbosity_options()

    version = sub.add_parser(
        "version", parents=[verbosity, _bundles.output_options()], help="print the version"
    )
    version.set_defaults(func=_cmd_version)

    # The daemons are added without `help`, so that --help lists them apart (epilog).
    operator = sub.add_parser(
        "operator",
        parents=[verbosity],
        description="Run the operator against the configured cluster (in-cluster, else "
        "KUBECONFIG) until SIGTERM or SIGINT.",
    )
    operator.add_argument(
        "--startup-timeout",
        type=_actions.parse_timeout,
        default=60.0,
        metavar="DURATION",
        help="how long to keep trying to reach the API server at start before exiting "
        "with 1, e.g. 30s, 2m (default: 1m)",
    )
    operator.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default: the whole cluster); naming "
        "a namespace serves it, a system one or --operator-namespace included",
    )
    operator.add_argument(
        "--exclude-namespace",
        action="append",
        default=[],
        metavar="NAMESPACE",
        help="do not serve this namespace when watching the whole cluster (repeatable; "
        "kube-system, kube-public, kube-node-lease and --operator-namespace never are)",
    )
    operator.add_argument(
        "--liveness",
        metavar="URL",
        default=None,
        help="serve a liveness probe, e.g. http://127.0.0.1:8080/healthz (default: off)",
    )
    group = operator.add_mutually_exclusive_group()
    group.add_argument(
        "--standalone",
        action="store_true",
        help="act alone, without peering with other replicas (the default)",
    )
    group.add_argument(
        "--peering",
        metavar="NAME",
        default=None,
        help="elect one active replica through the ClusterKopfPeering object NAME",
    )
    operator.add_argument(
        "--pod-name",
        default=os.environ.get("POD_NAME"),
        help="the pod this replica runs in; the acting replica labels it "
        "logicbundle.io/leader=true for the distributor Service (default: $POD_NAME; "
        "unset: no label)",
    )
    operator.add_argument(
        "--pod-namespace",
        default=os.environ.get("POD_NAMESPACE"),
        help="that pod's namespace (default: $POD_NAMESPACE)",
    )
    operator.add_argument(
        "--cache-dir", help="verified bundle cache served to agents (default: a temporary dir)"
    )
    operator.add_argument(
        "--distributor-port",
        type=int,
        default=None,
        help="serve the distributor on this port (default: off; 0 picks a free port)",
    )
    operator.add_argument(
        "--distributor-host", default="127.0.0.1", help="address to bind (default %(default)s)"
    )
    operator.add_argument("--distributor-tls-cert", help="PEM certificate for the distributor")
    operator.add_argument("--distributor-tls-key", help="PEM private key for the distributor")
    operator.add_argument(
        "--distributor-insecure-http",
        action="store_true",
        help="serve the distributor over plain HTTP (tokens in clear: local tests only)",
    )
    operator.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port"
    )
    operator.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for metrics (default %(default)s)"
    )
    hook = operator.add_argument_group("injection webhook")
    hook.add_argument("--webhook-port", type=int, default=None, help="serve the webhook (TLS)")
    hook.add_argument("--webhook-host", default=None, help="address to bind (default: all)")
    hook.add_argument("--agent-image", help="the agent image injected into pods")
    hook.add_argument(
        "--agent-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the injected agent container (repeatable)",
    )
    hook.add_argument(
        "--agent-resources",
        metavar="JSON",
        help='the injected agent\'s resources, e.g. \'{"limits": {"memory": "96Mi"}}\' '
        "(default: requests 10m/32Mi, limits 200m/96Mi)",
    )
    for kind in ("user", "group"):
        hook.add_argument(
            f"--agent-run-as-{kind}",
            type=_agent_id,
            default=DEFAULT_AGENT_ID,
            metavar="ID|none",
            help=f"the injected agent's runAs{kind.title()} (default %(default)s); `none` "
            "leaves it to the platform (OpenShift's SCC assigns its own)",
        )
    hook.add_argument(
        "--agent-image-pull-policy",
        choices=("Always", "IfNotPresent", "Never"),
        default="IfNotPresent",
        help="the injected agent's imagePullPolicy (default %(default)s)",
    )
    hook.add_argument(
        "--operator-namespace",
        default="logicbundle-system",
        help="where the webhook's certificate Secret lives (default %(default)s)",
    )
    hook.add_argument(
        "--webhook-service",
        default="logicbundle-webhook",
        help="the webhook Service name, for the certificate (default %(default)s)",
    )
    hook.add_argument(
        "--webhook-url",
        help="install the webhook configuration with this URL (local runs; the chart does it "
        "in a cluster); a port of 0 means the port the server bound",
    )
    hook.add_argument(
        "--agent-distributor-url", help="the distributor URL written into agents' configuration"
    )
    hook.add_argument("--distributor-ca-file", help="PEM CA agents use to check the distributor")
    _add_replica_flags(operator)
    operator.set_defaults(func=_cmd_operator)

    _add_distributor_parser(sub)

    agent = sub.add_parser(
        "agent",
        parents=[verbosity],
        description="Run the in-pod reload agent until SIGTERM (config: "
        "$LOGICBUNDLE_AGENT_CONFIG).",
    )
    agent.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="agent configuration JSON (wins over $LOGICBUNDLE_AGENT_CONFIG)",
    )
    agent.set_defaults(func=_cmd_agent)

    _bundles.add_parsers(sub, verbosity=verbosity)
    _actions.add_parsers(sub, verbosity=verbosity)
    _completion.add_parser(sub, verbosity=verbosity, build=build_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``logicbundle`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    daemon = args.command in DAEMONS
    _errors.configure_logging(
        verbose=args.verbose,
        daemon=daemon,
        fmt="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    return _errors.run(args.func, args, verbose=args.verbose)
