"""The sample application serves prices from the example bundles through the SDK."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from examples.sample_app.app import PricingApp, _handler
from examples.sample_app.bundles import EXAMPLES_DIR, install
from logicbundle.sdk import Split


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[PricingApp, str]]:
    app = PricingApp(root=tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(app))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    app.host.close(timeout=5)


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            body = response.read().decode()
            status = response.status
            ctype = response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        body, status, ctype = exc.read().decode(), exc.code, exc.headers["Content-Type"]
    return status, json.loads(body) if ctype == "application/json" else body


def test_the_app_serves_the_bundle_it_is_given_and_splits_by_user(
    app: tuple[PricingApp, str], tmp_path: Path
) -> None:
    pricing, base = app
    assert get(f"{base}/healthz")[0] == 503
    assert get(f"{base}/price?item=apple&qty=2")[0] == 503
    v1 = install(EXAMPLES_DIR / "pricing-v1", root=tmp_path)
    v2 = install(EXAMPLES_DIR / "pricing-v2", root=tmp_path)
    pricing.host.activate(v1.digest, v1.path)
    assert get(f"{base}/healthz") == (200, {"active": v1.digest})
    status, body = get(f"{base}/price?item=apple&qty=2")
    assert (status, body["price"], body["digest"]) == (200, 1.0, v1.digest)

    pricing.host.activate(v1.digest, v1.path, split=Split(candidate=v2.digest, weight=50))
    prices = {get(f"{base}/price?item=apple&qty=2&user=u{i}")[1]["price"] for i in range(40)}
    assert prices == {1.0, 1.2}
    same_user = {get(f"{base}/price?item=apple&qty=2&user=alice")[1]["price"] for _ in range(5)}
    assert len(same_user) == 1

    status, metrics = get(f"{base}/metrics")
    assert status == 200
    assert f'digest="{v2.digest}",role="candidate"' in metrics
    assert "logicbundle_sdk_call_duration_seconds_bucket" in metrics


def test_bundle_errors_answer_500_and_are_counted(
    app: tuple[PricingApp, str], tmp_path: Path
) -> None:
    pricing, base = app
    flaky = install(EXAMPLES_DIR / "pricing-flaky", root=tmp_path)
    pricing.host.activate(flaky.digest, flaky.path)  # the self-test used call 1
    statuses = [get(f"{base}/price?item=pear&qty=1")[0] for _ in range(9)]
    assert statuses.count(500) == 2
    (entry,) = get(f"{base}/stats")[1]["versions"]
    assert (entry["calls"], entry["errors"]) == (9, 2)  # the self-test calls it directly


def test_the_bad_example_bundle_is_refused_by_its_selftest(
    app: tuple[PricingApp, str], tmp_path: Path
) -> None:
    pricing, _ = app
    bad = install(EXAMPLES_DIR / "pricing-bad-selftest", root=tmp_path)
    with pytest.raises(Exception, match="melon has no price"):
        pricing.host.activate(bad.digest, bad.path)


def test_importing_the_sdk_loads_nothing_outside_the_standard_library() -> None:
    # Compare with what the interpreter had before the import: a venv made by pip loads
    # setuptools' _distutils_hack at start-up (a .pth file), which is not the SDK's doing.
    code = (
        "import sys; before = set(sys.modules); import logicbundle.sdk; "
        "mods = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print(sorted(m for m in mods if m not in sys.stdlib_module_names "
        "and m not in ('logicbundle', '__main__')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": "operator"},
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    assert out.strip() == "[]"
