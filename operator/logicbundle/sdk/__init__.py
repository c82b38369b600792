"""The in-application SDK: host hot-reloaded logic bundles inside a running Python process.

Standard library only (``prometheus_client`` is used when present, never
required), so it is cheap to import in every application.  The pieces:

* :class:`LogicHost` loads a Python bundle's entrypoint into a namespace of
  its own (``_logicbundle_<bundle>_<digest12>``), refuses a bundle whose
  interface hash differs from what the application declares or whose
  ``selftest()`` fails, and swaps one reference atomically.  Calls in flight
  finish on the version they started with; the old version is drained and
  its ``teardown()`` called; state moves through ``export_state()`` /
  ``import_state(schema, data)``.
* :meth:`LogicHost.function` returns a cheap routed proxy (a few hundred
  nanoseconds per call, including per-version counters kept per thread);
  ``proxy.by_key(user, ...)`` gives a sticky share of keys to a candidate
  version during a request-level split.
* :func:`serve` answers the reload agent on a Unix socket (the protocol is
  described in :mod:`logicbundle.sdk._protocol` and ``docs/sdk-protocol.md``).
* :func:`prometheus_text` and :func:`register_prometheus` expose the counters.

Bundle code is compiled off the request path: by one long-lived child process
of the application's own interpreter (``sys.executable``), started on the
first activation, and kept in memory per digest (a rollback compiles
nothing).  Request threads keep running while it compiles; when it cannot
(it died twice, or is another Python) the version is refused with
:class:`CompilerUnavailableError`, and nothing is compiled in the application.

Threads and asyncio: every proxy is synchronous and safe from any thread, and
may be called directly inside a coroutine; ``async def`` bundle functions go
through :meth:`LogicHost.async_function`.  The listener runs in daemon
threads, so it needs no event loop.

A bundle's entrypoint object (``module:object`` in the manifest) carries the
interface's functions as attributes, and optionally these hooks:

``selftest() -> bool | None``
    Run after loading, before any call; raising or returning False refuses the version.
``export_state() -> tuple[int, object]``
    Called on the serving version when a new one is loaded: ``(schema, data)``.
``import_state(schema: int, data: object) -> bool | None``
    Called on the new version; return False (before changing anything) to
    decline an unknown schema and start fresh.  Raising refuses the version.
``teardown() -> None``
    Called once the version is drained.
"""

from logicbundle.contract import (
    DEFAULT_ROOT,
    MANIFEST_SUFFIX,
    ROOT_ENV,
    SOCKET_ENV,
    SPLIT_FILE,
)
from logicbundle.contract import SOCKET_FILE_NAME as DEFAULT_SOCKET_NAME
from logicbundle.sdk._errors import (
    ActivationRefusedError,
    CompilerUnavailableError,
    EntrypointError,
    InterfaceMismatchError,
    ManifestError,
    NoBundleLoadedError,
    ProtocolError,
    SdkError,
    SelfTestFailedError,
    StateImportError,
)
from logicbundle.sdk._host import (
    SPLIT_RESOLUTION,
    Activation,
    AsyncBundleFunction,
    BundleFunction,
    LogicHost,
    Split,
    StateHandover,
    digest_from_dirname,
    read_split_descriptor,
)
from logicbundle.sdk._interface import canonical_json, interface_hash, normalize_interface
from logicbundle.sdk._manifest import ManifestInfo, manifest_path_for
from logicbundle.sdk._metrics import PrometheusCollector, prometheus_text, register_prometheus
from logicbundle.sdk._protocol import (
    PROTOCOL_VERSION,
    AgentListener,
    default_root,
    default_socket_path,
    serve,
)
from logicbundle.sdk._stats import StatsSnapshot

__all__ = [
    "DEFAULT_ROOT",
    "DEFAULT_SOCKET_NAME",
    "MANIFEST_SUFFIX",
    "PROTOCOL_VERSION",
    "ROOT_ENV",
    "SOCKET_ENV",
    "SPLIT_FILE",
    "SPLIT_RESOLUTION",
    "Activation",
    "ActivationRefusedError",
    "AgentListener",
    "AsyncBundleFunction",
    "BundleFunction",
    "CompilerUnavailableError",
    "EntrypointError",
    "InterfaceMismatchError",
    "LogicHost",
    "ManifestError",
    "ManifestInfo",
    "NoBundleLoadedError",
    "PrometheusCollector",
    "ProtocolError",
    "SdkError",
    "SelfTestFailedError",
    "Split",
    "StateHandover",
    "StateImportError",
    "StatsSnapshot",
    "canonical_json",
    "default_root",
    "default_socket_path",
    "digest_from_dirname",
    "interface_hash",
    "manifest_path_for",
    "normalize_interface",
    "prometheus_text",
    "read_split_descriptor",
    "register_prometheus",
    "serve",
]
