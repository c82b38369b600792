"""Every YAML document the repository shows users: files under docs/ and examples/, and
the ``yaml`` blocks of the README and the Markdown pages under docs/ and examples/.

Each document is one of four things, and nothing else: a Kubernetes object
(``apiVersion`` and ``kind``; applied to a real API server by
``e2e/suites/test_documented_yaml.py``), chart values (top-level keys of the
chart's ``values.yaml``; rendered by ``helm template`` there, which checks
them against ``values.schema.json``), a bundle descriptor
(``logicbundle.yaml``; packed by ``tests/cli/test_example_bundles.py`` and
checked by the CLI's reader in ``tests/api/test_documented_yaml.py``), or a
fragment named in :data:`FRAGMENTS` with what checks it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "logicbundle-operator"
_FENCE = re.compile(r"^```(?:yaml|yml)\n(.*?)^```", re.MULTILINE | re.DOTALL)

DESCRIPTOR_KEYS = frozenset({"name", "version", "entrypoint", "interface", "labels"}) | {
    "minAgentVersion"
}

FRAGMENTS = {
    ("docs/gitops.md", "data"): (
        "Argo CD's argocd-cm keys, whose values are the chart's Lua files named by path "
        "(tests/gitops runs those files)"
    ),
    ("docs/analysis.md", "analysis"): (
        "a LogicBundle's spec.rollout.analysis (tests/api/test_metric_template_models.py "
        "validates it; the whole object is docs/examples/metric-templates/bundle.yaml)"
    ),
}
"""Documents that are neither objects nor descriptors: (page, first key) -> what checks them."""


@dataclass(frozen=True)
class Document:
    """One YAML document and where it is written."""

    where: str
    page: str
    body: Any

    @property
    def is_object(self) -> bool:
        return isinstance(self.body, dict) and {"apiVersion", "kind"} <= set(self.body)

    @property
    def is_descriptor(self) -> bool:
        return (
            isinstance(self.body, dict)
            and {"name", "version", "interface"} <= set(self.body)
            and set(self.body) <= DESCRIPTOR_KEYS
        )

    @property
    def is_values(self) -> bool:
        """Chart values: a mapping whose keys are all top-level keys of the chart's values."""
        return (
            isinstance(self.body, dict)
            and not self.is_object
            and set(self.body) <= set(yaml.safe_load((CHART / "values.yaml").read_text()))
        )

    @property
    def group(self) -> str:
        api_version = str(self.body["apiVersion"])
        return api_version.split("/", maxsplit=1)[0] if "/" in api_version else ""


def _pages() -> list[Path]:
    pages = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "examples").rglob("*.md")]
    return sorted(pages)


def yaml_files() -> list[Path]:
    """Every YAML file under docs/ and examples/."""
    found = [*(REPO / "docs").rglob("*"), *(REPO / "examples").rglob("*")]
    return sorted(p for p in found if p.suffix in (".yaml", ".yml") and p.is_file())


def documents() -> list[Document]:
    """Every YAML document users are shown, in file order (blocks numbered per page)."""
    out = []
    for path in yaml_files():
        page = str(path.relative_to(REPO))
        for i, body in enumerate(yaml.safe_load_all(path.read_text())):
            if body is not None:
                out.append(Document(f"{page}#{i}", page, body))
    for path in _pages():
        page = str(path.relative_to(REPO))
        for n, block in enumerate(_FENCE.findall(path.read_text())):
            for i, body in enumerate(yaml.safe_load_all(block)):
                if body is not None:
                    out.append(Document(f"{page}: yaml block {n + 1}#{i}", page, body))
    return out


def objects() -> list[Document]:
    """The Kubernetes objects among :func:`documents`."""
    return [d for d in documents() if d.is_object]
