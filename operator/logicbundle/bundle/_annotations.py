"""The types an interface declares are Python annotations: checked when a bundle is packed.

A function's parameter and return types are written as source text
(``int``, ``dict[str, float]``, ``list[Order]``) and hashed into the
``interfaceHash`` the application compares with its own.  A type written the
JSON-schema way (``integer``, ``string``, ``number``, ``boolean``) would pack,
sign and roll out, and only the SDK in every pod would refuse the bundle,
because the application declares ``int``.  So packing refuses what cannot be
a Python type, saying which type was meant.

What is accepted: a Python expression of names, dotted names, subscripts,
``|`` unions, tuples and lists (``Callable[[int], str]``), and constants
(``None``, ``...``, ``Literal["a"]`` values, quoted forward references).  A
bare lower-case name must be a builtin or ``typing``/``collections.abc``
name; a class of the application is written in CapWords (``Order``) or
dotted (``shop.models.order``), as PEP 8 names classes.
"""

from __future__ import annotations

import ast
import difflib
from typing import Final

KNOWN_NAMES: Final = frozenset(
    {
        # builtins
        "bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list",
        "memoryview", "object", "range", "set", "slice", "str", "tuple", "type",
        # datetime, decimal and friends written bare after a from-import
        "date", "datetime", "time", "timedelta", "timezone",
        # typing and collections.abc
        "deque", "defaultdict", "namedtuple",
    }
)  # fmt: skip
"""Lower-case names that are types (CapWords names are taken as the application's classes)."""

LIKELY_MEANT: Final = {
    "integer": "int",
    "int32": "int",
    "int64": "int",
    "long": "int",
    "string": "str",
    "char": "str",
    "text": "str",
    "number": "float",
    "double": "float",
    "float64": "float",
    "boolean": "bool",
    "array": "list",
    "map": "dict",
    "null": "None",
    "none": "None",
    "void": "None",
    "any": "Any",
}
"""Types of other languages and JSON schema, and the Python annotation they stand for."""

_ALLOWED_NODES: Final = (
    ast.Expression,
    ast.Name,
    ast.Attribute,
    ast.Subscript,
    ast.Tuple,
    ast.List,
    ast.Constant,
    ast.BinOp,
    ast.BitOr,
    ast.UnaryOp,
    ast.USub,
    ast.Load,
    ast.Slice,
)


def _suggestion(name: str) -> str:
    meant = LIKELY_MEANT.get(name.lower())
    if meant is None:
        close = difflib.get_close_matches(name, sorted(KNOWN_NAMES), n=1)
        meant = close[0] if close else None
    return f" (did you mean {meant}?)" if meant else ""


def annotation_problem(text: str) -> str | None:
    """Why ``text`` is not a Python type annotation, or None when it is one."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return f"{text!r} is not a Python type annotation"
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            return f"{text!r} is not a type: {type(node).__name__.lower()} in an annotation"
        if isinstance(node, ast.BinOp) and not isinstance(node.op, ast.BitOr):
            return f"{text!r} is not a type: only | joins types"
    dotted = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Name) or id(node) in dotted:
            continue  # the head of a dotted name (shop.Order) is a module
        name = node.id
        if name in KNOWN_NAMES or name[:1].isupper() or name.startswith("_"):
            continue
        return f"unknown type {name!r}{_suggestion(name)}"
    return None
