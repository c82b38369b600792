"""The agent's configuration: the JSON document the injection webhook writes.

The contract is ``docs/agent-config.md``.  Parsed with the standard library
only (the agent runs in every pod and must not load pydantic), strictly:
unknown keys are refused, so a newer webhook and an older agent fail loudly
instead of half-working.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from logicbundle import contract
from logicbundle.agent._errors import ConfigError

DEFAULT_ROOT: Final = contract.DEFAULT_ROOT
DEFAULT_TOKEN_FILE: Final = "/var/run/secrets/logicbundle/token"  # noqa: S105 - a path
DEFAULT_ANNOTATIONS_FILE: Final = "/etc/logicbundle/podinfo/annotations"
DEFAULT_LABELS_FILE: Final = f"/etc/logicbundle/podinfo/{contract.LABELS_FILE_NAME}"
DEFAULT_STATE_DIR: Final = contract.STATE_DIR
DEFAULT_LISTEN: Final = "0.0.0.0:9901"
DEFAULT_HEALTH_TIMEOUT: Final = 10.0
DEFAULT_NOTIFY_TIMEOUT: Final = 5.0

_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DURATION: Final = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+$")
_DURATION_PART: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_LOCAL_URL: Final = re.compile(
    r"^http://(?:localhost|127\.0\.0\.1|\[::1\])(?::[0-9]{1,5})?(?:/\S*)?$"
)
_SIGNALS: Final = ("SIGHUP", "SIGUSR1", "SIGUSR2")
_NOTIFY_MODES: Final = ("sdk", "http", "signal", "none")
_HEALTH_MODES: Final = ("sdk", "http", "none")


def parse_duration(value: object, what: str) -> float:
    """Seconds from a Go duration string (``10s``, ``1m30s``, ``250ms``)."""
    if not isinstance(value, str) or len(value) > 32 or not _DURATION.fullmatch(value):
        raise ConfigError(f"{what} must be a Go duration like '10s' or '250ms', not {value!r}")
    return sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(value))


@dataclass(frozen=True, kw_only=True)
class NotifySettings:
    """How to tell the application (the LogicBundle's ``spec.target.notify``)."""

    mode: str = "sdk"
    url: str | None = None
    timeout: float = DEFAULT_NOTIFY_TIMEOUT
    signal: str = "SIGHUP"
    process_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class HealthSettings:
    """How to confirm health after a swap (``spec.target.healthCheck``); mode resolved."""

    mode: str = "sdk"
    url: str | None = None
    timeout: float = DEFAULT_HEALTH_TIMEOUT


@dataclass(frozen=True, kw_only=True)
class BundleSettings:
    name: str
    source: str
    insecure: bool = False
    notify: NotifySettings = field(default_factory=NotifySettings)
    health: HealthSettings = field(default_factory=HealthSettings)


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    root: Path = Path(DEFAULT_ROOT)
    distributor: str = ""
    distributor_ca: Path | None = None
    token_file: Path = Path(DEFAULT_TOKEN_FILE)
    annotations_file: Path = Path(DEFAULT_ANNOTATIONS_FILE)
    labels_file: Path = Path(DEFAULT_LABELS_FILE)
    """The downward-API file of the pod's labels (parsed default: beside ``annotationsFile``)."""
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    """Where each bundle's published rollout state is mounted, as ``<bundle>.json``."""
    socket: Path = Path(DEFAULT_ROOT) / contract.SOCKET_FILE_NAME
    listen: str = DEFAULT_LISTEN
    report_interval: float = 10.0
    """Seconds between periodic reports (counters for analysis); a swap reports at once."""
    bundles: Mapping[str, BundleSettings] = field(default_factory=dict)

    @property
    def listen_address(self) -> tuple[str, int]:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"listen must be host:port, not {self.listen!r}")
        return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104


def _object(raw: object, what: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} must be a JSON object")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{what} has unknown key(s) {', '.join(unknown)}; known: {', '.join(allowed)} "
            "(is the agent older than the webhook that configured it?)"
        )
    return raw


def _string(raw: object, what: str, *, empty: bool = False) -> str:
    if not isinstance(raw, str) or (not raw and not empty):
        raise ConfigError(f"{what} must be a {'' if empty else 'non-empty '}string")
    return raw


def _local_url(raw: object, what: str) -> str:
    url = _string(raw, what)
    if len(url) > 2048 or not _LOCAL_URL.fullmatch(url):
        raise ConfigError(f"{what} must be an http:// URL on localhost, not {url!r}")
    return url


def parse_notify(raw: object, what: str) -> NotifySettings:
    """The ``notify`` object (``spec.target.notify`` shape) -> :class:`NotifySettings`."""
    obj = _object(raw, what, ("mode", "http", "signal"))
    mode = obj.get("mode", "sdk")
    if mode not in _NOTIFY_MODES:
        raise ConfigError(f"{what}.mode must be one of {', '.join(_NOTIFY_MODES)}, not {mode!r}")
    if (mode == "http") != ("http" in obj and obj["http"] is not None):
        raise ConfigError(f"{what}.http is required with mode http and refused otherwise")
    if (mode == "signal") != ("signal" in obj and obj["signal"] is not None):
        raise ConfigError(f"{what}.signal is required with mode signal and refused otherwise")
    if mode == "http":
        http = _object(obj["http"], f"{what}.http", ("url", "timeout"))
        return NotifySettings(
            mode=mode,
            url=_local_url(http.get("url"), f"{what}.http.url"),
            timeout=parse_duration(http.get("timeout", "5s"), f"{what}.http.timeout"),
        )
    if mode == "signal":
        sig = _object(obj["signal"], f"{what}.signal", ("name", "processName"))
        name = sig.get("name", "SIGHUP")
        if name not in _SIGNALS:
            raise ConfigError(f"{what}.signal.name must be one of {', '.join(_SIGNALS)}")
        process = _string(sig.get("processName"), f"{what}.signal.processName")
        if len(process) > 255 or "/" in process or "\x00" in process:
            raise ConfigError(f"{what}.signal.processName {process!r} is not a command name")
        return NotifySettings(mode=mode, signal=name, process_name=process)
    return NotifySettings(mode=mode)


def parse_health(raw: object, what: str, *, notify: NotifySettings) -> HealthSettings:
    """The ``healthCheck`` object -> :class:`HealthSettings` with the mode defaulted."""
    obj = _object(raw, what, ("mode", "url", "timeout"))
    mode = obj.get("mode")
    if mode is None:
        mode = "sdk" if notify.mode == "sdk" else "none"
    if mode not in _HEALTH_MODES:
        raise ConfigError(f"{what}.mode must be one of {', '.join(_HEALTH_MODES)}, not {mode!r}")
    if mode == "sdk" and notify.mode != "sdk":
        raise ConfigError(f"{what}.mode sdk needs notify.mode sdk")
    if (mode == "http") != (obj.get("url") is not None):
        raise ConfigError(f"{what}.url is required with mode http and refused otherwise")
    url = _local_url(obj["url"], f"{what}.url") if mode == "http" else None
    timeout = parse_duration(obj.get("timeout", "10s"), f"{what}.timeout")
    return HealthSettings(mode=mode, url=url, timeout=timeout)


def _bundle(name: str, raw: object) -> BundleSettings:
    what = f"bundles.{name}"
    if not _DNS_LABEL.fullmatch(name):
        raise ConfigError(f"bundle name {name!r} is not a DNS label")
    obj = _object(raw, what, ("source", "insecure", "notify", "healthCheck"))
    insecure = obj.get("insecure", False)
    if not isinstance(insecure, bool):
        raise ConfigError(f"{what}.insecure must be true or false")
    notify = parse_notify(obj.get("notify", {"mode": "sdk"}), f"{what}.notify")
    return BundleSettings(
        name=name,
        source=_string(obj.get("source"), f"{what}.source"),
        insecure=insecure,
        notify=notify,
        health=parse_health(obj.get("healthCheck", {}), f"{what}.healthCheck", notify=notify),
    )


_TOP_KEYS: Final = (
    "root",
    "distributor",
    "distributorCA",
    "tokenFile",
    "annotationsFile",
    "labelsFile",
    "stateDir",
    "socket",
    "listen",
    "reportInterval",
    "bundles",
)


def parse_config(data: str | bytes) -> AgentConfig:
    """Parse and check the configuration document, or raise :class:`ConfigError`."""
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"the agent configuration is not JSON: {exc}") from None
    obj = _object(raw, "the agent configuration", _TOP_KEYS)
    root = Path(_string(obj.get("root", DEFAULT_ROOT), "root"))
    distributor = _string(obj.get("distributor", ""), "distributor", empty=True).rstrip("/")
    if distributor and not distributor.startswith(("https://", "http://")):
        raise ConfigError(f"distributor must be an http(s):// URL, not {distributor!r}")
    ca = obj.get("distributorCA")
    bundles_raw = obj.get("bundles", {})
    if not isinstance(bundles_raw, dict):
        raise ConfigError("bundles must be an object keyed by bundle name")
    if len(bundles_raw) > 64:
        raise ConfigError("at most 64 bundles per pod")
    annotations_file = Path(
        _string(obj.get("annotationsFile", DEFAULT_ANNOTATIONS_FILE), "annotationsFile")
    )
    labels_default = str(annotations_file.with_name(contract.LABELS_FILE_NAME))
    config = AgentConfig(
        root=root,
        distributor=distributor,
        distributor_ca=Path(_string(ca, "distributorCA")) if ca else None,
        token_file=Path(_string(obj.get("tokenFile", DEFAULT_TOKEN_FILE), "tokenFile")),
        annotations_file=annotations_file,
        labels_file=Path(_string(obj.get("labelsFile", labels_default), "labelsFile")),
        state_dir=Path(_string(obj.get("stateDir", DEFAULT_STATE_DIR), "stateDir")),
        socket=Path(_string(obj.get("socket", str(root / contract.SOCKET_FILE_NAME)), "socket")),
        listen=_string(obj.get("listen", DEFAULT_LISTEN), "listen"),
        report_interval=parse_duration(obj.get("reportInterval", "10s"), "reportInterval"),
        bundles={name: _bundle(name, value) for name, value in bundles_raw.items()},
    )
    _ = config.listen_address
    if config.report_interval < 0.1:
        raise ConfigError("reportInterval must be at least 100ms")
    return config


def load_config(
    path: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> AgentConfig:
    """``--config FILE`` when given (it wins), else ``$LOGICBUNDLE_AGENT_CONFIG``."""
    if path is not None:
        try:
            return parse_config(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read the agent configuration {str(path)!r}: {exc}") from None
    env = os.environ if environ is None else environ
    name = contract.AGENT_CONFIG_ENV
    text = env.get(name)
    if not text:
        raise ConfigError(
            f"no configuration: pass --config FILE or set {name} (the webhook sets it)"
        )
    return parse_config(text)
