"""The chart, the docs and the package agree on where the image and the chart come from.

The chart's default image is the one the README, the quick start and the
chart's README name (and say is not published); the chart's appVersion is the
package version the image is built from; every chart archive or ``--version``
the docs give for ``oci://…/logicbundle-operator`` is the chart's version; and
the docs show how to build the image with docker, podman and buildah and push it.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

import logicbundle

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "logicbundle-operator"
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), CHART / "README.md"]


def test_the_chart_installs_the_image_of_the_package_version_it_ships() -> None:
    assert CHART_META["appVersion"] == logicbundle.__version__
    assert VALUES["image"]["tag"] in ("", CHART_META["appVersion"])


def test_the_readmes_and_the_quick_start_name_the_default_image_and_where_it_comes_from() -> None:
    default = VALUES["image"]["repository"]
    for page in (REPO / "README.md", REPO / "docs" / "quickstart.md", CHART / "README.md"):
        assert default in page.read_text(), f"{page.name} does not name {default}"
    readme = REPO / "README.md"
    assert "Dockerfile" in readme.read_text() and "No image is published" in readme.read_text()


def test_the_docs_show_building_and_pushing_the_image_with_docker_podman_and_buildah() -> None:
    text = (REPO / "docs" / "quickstart.md").read_text()
    for build, push in (("docker build", "docker push"), ("podman build", "podman push")):
        assert re.search(rf"{build} -t (\S+) \. && {push} \1", text), build
    assert re.search(r"buildah bud -t (\S+) \. && buildah push \1", text)


def test_every_documented_chart_version_is_the_charts() -> None:
    name, version = CHART_META["name"], str(CHART_META["version"])
    seen = []
    for page in PAGES:
        text = page.read_text()
        for found in re.findall(rf"{name}-(\d+\.\d+\.\d+\S*?)\.tgz", text):
            seen.append((page.name, found))
        for line in text.splitlines():
            if "oci://" in line and f"/{name}" in line and "--version" in line:
                seen.append((page.name, line.split("--version")[1].split()[0]))
    assert seen, "no doc installs the packaged chart"
    assert [s for s in seen if s[1] != version] == []
