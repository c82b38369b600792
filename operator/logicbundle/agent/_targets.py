"""Targets: what each bundle of this pod should run, from either path; the downward-API format.

A :class:`Target` is what the distributor sends (with its settings) or what
the slow path computes from the published rollout state
(:mod:`logicbundle.agent._slow`).  Printed, it reads ``sha256:S`` or
``sha256:S;candidate=sha256:C;weight=N``.  The slow path reads the pod's
annotations and labels from downward-API files, which the kubelet writes as
``key="value"`` lines, the value quoted like Go's ``%q``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from logicbundle.agent._config import HealthSettings, NotifySettings

DIGEST_RE: Final = re.compile(r"^sha256:[a-f0-9]{64}$")


def is_digest(value: object) -> bool:
    return isinstance(value, str) and DIGEST_RE.fullmatch(value) is not None


@dataclass(frozen=True, kw_only=True)
class Target:
    """One bundle's assignment: a digest, maybe a split, maybe settings from the distributor."""

    digest: str
    candidate: str | None = None
    weight: int = 0
    notify: NotifySettings | None = None
    health: HealthSettings | None = None
    source: str | None = None
    mount_path: str | None = None
    """Where the application sees this bundle's directory (default: the agent's own view)."""
    revision: int = field(default=0, compare=False)
    """The revision of the published state it comes from (0: unknown); not what the pod
    runs, so two targets differing only by it are equal."""
    traceparent: str | None = field(default=None, compare=False)
    """The rollout's trace context (W3C ``traceparent``): reported with the swap it causes, so
    the distributor exports that swap as a span of the rollout's trace (the agent itself
    sends nothing anywhere)."""

    def __post_init__(self) -> None:
        if not is_digest(self.digest):
            raise ValueError(f"digest {self.digest!r} is not sha256:<64 hex>")
        if self.candidate is None:
            if self.weight != 0:
                raise ValueError("a weight needs a candidate")
        else:
            if not is_digest(self.candidate):
                raise ValueError(f"candidate {self.candidate!r} is not sha256:<64 hex>")
            if not 0 <= self.weight <= 100:
                raise ValueError(f"weight {self.weight} is not within 0-100")

    @property
    def key(self) -> tuple[str, str | None, int]:
        """What the pod must run; two targets with one key need no swap between them."""
        return (self.digest, self.candidate, self.weight)

    def digests(self) -> tuple[str, ...]:
        return (self.digest,) if self.candidate is None else (self.digest, self.candidate)

    def __str__(self) -> str:
        if self.candidate is None:
            return self.digest
        return f"{self.digest};candidate={self.candidate};weight={self.weight}"


# --- the downward-API file ---------------------------------------------------------------

_SIMPLE_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}


def go_unquote(quoted: str) -> str:
    """The string a Go ``%q`` literal spells, or :class:`ValueError`."""
    if len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"':
        raise ValueError(f"not a quoted string: {quoted[:40]!r}")
    body = quoted[1:-1]
    out: list[str] = []
    raw = bytearray()  # \xNN escapes are bytes of UTF-8
    i = 0

    def flush() -> None:
        if raw:
            out.append(raw.decode("utf-8", errors="replace"))
            raw.clear()

    while i < len(body):
        char = body[i]
        if char == '"':
            raise ValueError("an unescaped quote inside a quoted string")
        if char != "\\":
            flush()
            out.append(char)
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError("a quoted string ends with a backslash")
        code = body[i + 1]
        if code in _SIMPLE_ESCAPES:
            flush()
            out.append(_SIMPLE_ESCAPES[code])
            i += 2
        elif code == "x":
            raw.append(int(_hex(body, i + 2, 2), 16))
            i += 4
        elif code in "uU":
            width = 4 if code == "u" else 8
            flush()
            out.append(chr(int(_hex(body, i + 2, width), 16)))
            i += 2 + width
        elif code in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or any(c not in "01234567" for c in digits):
                raise ValueError("a bad octal escape")
            raw.append(int(digits, 8) & 0xFF)
            i += 4
        else:
            raise ValueError(f"an unknown escape \\{code}")
    flush()
    return "".join(out)


def _hex(body: str, start: int, width: int) -> str:
    digits = body[start : start + width]
    if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise ValueError("a bad hex escape")
    return digits


def go_quote(value: str) -> str:
    """Quote like Go's ``%q`` for the characters annotations hold (the kubelet's format)."""
    out = ['"']
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def parse_annotations(text: str) -> dict[str, str]:
    """``key="value"`` lines (the kubelet's downward-API format) -> a dict; bad lines skipped.

    The same format holds the pod's annotations and its labels.
    """
    result: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, quoted = line.partition("=")
        if not sep or not key:
            continue
        try:
            result[key] = go_unquote(quoted)
        except ValueError:
            continue
    return result


def format_annotations(annotations: Mapping[str, str]) -> str:
    """What the kubelet writes for ``annotations`` or labels (sorted ``key="value"`` lines)."""
    return "".join(f"{key}={go_quote(annotations[key])}\n" for key in sorted(annotations))
