"""``logicbundle history NAME``: the past rollouts kept in ``status.history``.

What ran here, who signed it, how far each rollout got and why it ended:
read from the status alone (the operator writes each transition into the
history as it makes it), so the answer needs no log search and survives
restarts of the operator.  Text for people, ``-o json`` or ``-o yaml`` for
scripts (the entries exactly as the status holds them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

OUTPUTS: Final = ("text", "json", "yaml")

_OUTCOME_TEXT: Final = {
    "Progressing": "in flight",
    "Frozen": "frozen after a failure (retry, abort or a new digest ends it)",
    "Installed": "installed (the first digest, straight to every pod)",
    "Promoted": "promoted: passed every stage, became stable",
    "RolledBack": "rolled back",
    "Aborted": "aborted by request",
    "Superseded": "superseded",
    "Restored": "made stable again by a rollback request",
}


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _entries(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = obj.get("status")
    history = status.get("history") if isinstance(status, Mapping) else None
    return [entry for entry in history or () if isinstance(entry, Mapping)]


def _short(digest: object) -> str:
    return str(digest).removeprefix("sha256:")[:12] if digest else "-"


def _stage_lines(stages: Sequence[Mapping[str, Any]]) -> list[str]:
    width = max((len(str(stage.get("name", ""))) for stage in stages), default=0)
    lines = ["    stages:"]
    for stage in stages:
        verdict = stage.get("verdict") or "running"
        span = f"{stage.get('startedAt') or '?'} .. {stage.get('endedAt') or 'now'}"
        message = stage.get("message") or ""
        lines.append(
            f"      {stage.get('name', '?'):<{width}}  {verdict:<11}  {span}"
            + (f"  {message}" if message else "")
        )
    return lines


def _entry_lines(entry: Mapping[str, Any]) -> list[str]:
    outcome = str(entry.get("outcome") or "Promoted")
    when = f"started {entry.get('startedAt') or '?'}"
    if entry.get("endedAt") or entry.get("promotedAt"):
        when += f", ended {entry.get('endedAt') or entry.get('promotedAt')}"
    lines = [f"  {_short(entry.get('digest'))}  {outcome:<11}  {when}"]
    lines.append(f"    {_OUTCOME_TEXT.get(outcome, outcome)}")
    if entry.get("message"):
        lines[-1] += f": {entry['message']}"
    lines.append(f"    digest: {entry.get('digest')}")
    if entry.get("ref"):
        lines.append(f"    ref:    {entry['ref']}")
    signer = entry.get("signer")
    if signer:
        issuer = entry.get("issuer")
        lines.append(f"    signer: {signer}" + (f" (issuer {issuer})" if issuer else ""))
    stages = [stage for stage in entry.get("stages") or () if isinstance(stage, Mapping)]
    if stages:
        lines += _stage_lines(stages)
    return lines


def render_history(obj: Mapping[str, Any]) -> str:
    """The history for people: one block per rollout, newest first."""
    meta = _meta(obj)
    name = f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"
    entries = _entries(obj)
    if not entries:
        return f"LogicBundle {name}: no rollout recorded yet"
    lines = [f"LogicBundle {name}: {len(entries)} rollout(s), newest first"]
    for entry in entries:
        lines.append("")
        lines += _entry_lines(entry)
    return "\n".join(lines)


def history_document(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The history for scripts: the object's identity and the entries as stored."""
    meta = _meta(obj)
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "history": [dict(entry) for entry in _entries(obj)],
    }


def format_history(obj: Mapping[str, Any], output: str) -> str:
    """``obj``'s history as ``text``, ``json`` or ``yaml``."""
    if output == "json":
        return json.dumps(history_document(obj), indent=2, sort_keys=True)
    if output == "yaml":
        import yaml  # only this output pays for it

        return str(yaml.safe_dump(history_document(obj), sort_keys=False)).rstrip()
    return render_history(obj)
