"""Path rules shared by the manifest, the packer, the unpacker and the agent's manifest check.

A bundle path is a relative POSIX path in canonical form: components separated
by single slashes, none of them empty, ``.`` or ``..``, none longer than
:data:`NAME_MAX` bytes; no backslash, no control character (C0, DEL or C1), no
bidirectional formatting character and no line or paragraph separator.  A name
must read the same in a terminal, a log line and a review as it does to the
file system: ``evil`` U+202E ``txt.py`` shows as ``evilyp.txt``.  The manifest
only accepts canonical paths.  The unpacker accepts the harmless spellings
other tar writers produce (``./a``, ``a//b``, ``a/./b``, a trailing slash on
directories), canonicalises them, and then compares them with
:func:`collision_key`, which folds case and Unicode normalisation so that two
spellings of one file on a case-insensitive or
normalising file system count as duplicates.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from logicbundle.bundle._errors import BundleError

_BIDI_CONTROLS: Final = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
"""The bidirectional formatting characters (Unicode's Bidi_Control property)."""
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})
"""Control characters (C0, DEL, C1), lone surrogates, line and paragraph separators."""


def _forbidden(char: str) -> bool:
    return (
        char == "\\"
        or char in _BIDI_CONTROLS
        or unicodedata.category(char) in _FORBIDDEN_CATEGORIES
    )


class PathRuleError(BundleError, ValueError):
    """A path breaks a rule; ``rule`` says which one."""

    reason = "PathRuleBroken"

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


NAME_MAX: Final = 255
"""Bytes in one path component: what every Linux file system takes (``NAME_MAX``)."""

ABSOLUTE: Final = "absolute"
TRAVERSAL: Final = "traversal"
INVALID: Final = "invalid"
NOT_CANONICAL: Final = "not-canonical"
COMPONENT_TOO_LONG: Final = "component-too-long"


def canonicalise(name: str) -> str:
    """Return the canonical spelling of a tar member name, or raise :class:`PathRuleError`.

    Returns ``""`` for the archive root (``.`` or ``./``).
    """
    if not name:
        raise PathRuleError(INVALID, "the path is empty")
    bad = sorted({c for c in name if _forbidden(c)})
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad)
        raise PathRuleError(
            INVALID,
            f"the path {name!r} contains forbidden characters ({shown}): a backslash, "
            "a control character, a bidirectional formatting character or a line separator",
        )
    if name.startswith("/"):
        raise PathRuleError(ABSOLUTE, f"the path {name!r} is absolute")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathRuleError(TRAVERSAL, f"the path {name!r} has a '..' component")
    return "/".join(parts)


def _encoded_size(component: str) -> int:
    try:
        return len(component.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return len(component.encode("utf-8", "surrogatepass"))


def check_components(canonical: str) -> None:
    """Raise :class:`PathRuleError` when a component of ``canonical`` is over :data:`NAME_MAX`.

    Such a name passes every other rule and then fails ``open(2)`` with
    ``ENAMETOOLONG`` in the middle of an unpack.
    """
    for component in canonical.split("/"):
        size = _encoded_size(component)
        if size > NAME_MAX:
            raise PathRuleError(
                COMPONENT_TOO_LONG,
                f"the path component {component[:32]!r}... is {size} bytes, more than "
                f"{NAME_MAX} (the longest file name a file system takes)",
            )


def check_canonical(path: str) -> str:
    """Return ``path`` if it is canonical, not the root and its components fit, else raise."""
    canonical = canonicalise(path)
    if canonical != path or not canonical:
        raise PathRuleError(
            NOT_CANONICAL,
            f"the path {path!r} is not canonical: write it as a relative POSIX path "
            "without empty, '.' or '..' components and without a trailing slash",
        )
    check_components(path)
    return path


def collision_key(canonical: str) -> str:
    """The key under which two paths name the same file on some file system."""
    return unicodedata.normalize("NFC", canonical).casefold()


def depth(canonical: str) -> int:
    """Number of components of a canonical path."""
    return canonical.count("/") + 1 if canonical else 0


def parents(canonical: str) -> list[str]:
    """The canonical paths of all ancestors of ``canonical``, outermost first."""
    parts = canonical.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]
