"""Packing refuses an interface type that is not a Python annotation (``integer`` for ``int``).

Before, such a bundle packed, signed and rolled out, and only the SDK in
every pod refused it (its interface hash differed from the application's).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from logicbundle.bundle import InvalidManifestError, pack_directory
from logicbundle.bundle._annotations import annotation_problem
from logicbundle.cli import main


@pytest.mark.parametrize(
    "text",
    [
        "int",
        "Any",
        "None",
        "dict[str, float]",
        "list[Order]",
        "str | None",
        "Optional[str]",
        "typing.Optional[int]",
        "shop.models.Order",
        "Callable[[int, str], bool]",
        "tuple[int, ...]",
        'Literal["a", -1]',
        "'Order'",
        "datetime",
        "_Private",
    ],
)
def test_python_annotations_are_accepted(text: str) -> None:
    assert annotation_problem(text) is None


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("integer", "unknown type 'integer' (did you mean int?)"),
        ("string", "unknown type 'string' (did you mean str?)"),
        ("number", "(did you mean float?)"),
        ("boolean", "(did you mean bool?)"),
        ("list[integer]", "unknown type 'integer'"),
        ("dict[str, strr]", "unknown type 'strr' (did you mean str?)"),
        ("int(", "is not a Python type annotation"),
        ("f()", "is not a type: call"),
        ("int + str", "only | joins types"),
        ("lambda: int", "is not a type"),
    ],
)
def test_what_is_not_a_python_type_is_refused_with_what_was_meant(text: str, said: str) -> None:
    problem = annotation_problem(text)
    assert problem is not None and said in problem


def _interface(param_type: str, returns: str = "float") -> dict[str, object]:
    return {
        "functions": {
            "price": {"params": [{"name": "item", "type": param_type}], "returns": returns}
        }
    }


def test_pack_refuses_an_unknown_parameter_or_return_type(tmp_path: Path) -> None:
    (tmp_path / "rules.py").write_text("def price(item):\n    return 1.0\n")
    with pytest.raises(InvalidManifestError, match=r"functions\.price\.params\.item: unknown"):
        pack_directory(tmp_path, name="p", version="1.0.0", interface=_interface("integer"))
    with pytest.raises(InvalidManifestError, match=r"functions\.price\.returns: unknown"):
        pack_directory(tmp_path, name="p", version="1.0.0", interface=_interface("int", "number"))
    packed = pack_directory(tmp_path, name="p", version="1.0.0", interface=_interface("int"))
    assert packed.manifest.interface.functions["price"].params[0].type == "int"


def test_the_pack_command_says_which_type_and_what_was_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rules.py").write_text("def price(item):\n    return 1.0\n")
    descriptor = {"name": "p", "version": "1.0.0", "interface": _interface("integer")}
    (tmp_path / "logicbundle.yaml").write_text(yaml.safe_dump(descriptor))
    out = tmp_path.parent / "p.tar"
    assert main(["pack", str(tmp_path), "--output-file", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == (
        "error: interface.functions.price.params.item: unknown type 'integer' (did you mean int?)"
    )
    assert not out.exists()
