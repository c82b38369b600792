"""What tracing costs (issue 12, part 1): ``python -m e2e.bench.bench_tracing``.

Prints, each with tracing off and on:

- **SDK per call**: a routed call to a trivial bundle function (``add``), minus a
  direct call of the same bound method, batch by batch (median over batches,
  ns/call), in a fresh interpreter each; "on" is an application that imported
  ``opentelemetry``, set an SDK tracer provider and calls inside a recording
  span (activations then record their span event; calls are untouched);
- **agent RSS**: the agent as its own process (``python -m logicbundle.agent``)
  after it swapped from disk to the digest of a published state with or
  without a ``traceparent`` (so the traced swap was recorded and reported),
  then ``--rest`` seconds at rest; the median of ``--agent-runs`` starts;
- **operator CPU per rollout**: the real operator (its embedded distributor)
  on the local control plane, ``--pods`` kwok pods whose agents are simulated
  (bench_rollout's: a long-poll each, a report on every new target, with a
  ``lastSwap`` carrying the target's ``traceparent`` when there is one, its
  step timings zero), ``--rounds`` rollouts of a new digest through a 5 %
  stage and ``all`` (no analysis, no pause); the operator process's user+system
  CPU from ``kubectl apply`` to ``Ready`` on the new digest, median.  "On"
  exports to Jaeger v2 (the harness's, in-memory);
- **trace of one rollout** (on): its span count and the size of the trace as
  Jaeger's query API returns it (JSON) and as OTLP/protobuf (the request
  bodies of one export of the same spans, re-encoded).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from e2e.bench import bench_rollout as br
from e2e.harness.cluster import Cluster
from e2e.harness.jaeger import Jaeger
from e2e.harness.operator import KeyPair, Operator
from e2e.harness.proc import free_port, rss_bytes, wait_for
from e2e.harness.services import Registry
from examples.sample_app.bundles import EXAMPLES_DIR, install
from logicbundle import contract
from logicbundle.agent import format_annotations

REPO = Path(__file__).resolve().parents[2]
BUNDLE = "pricing"
TRACEPARENT = "00-" + "4bf92f3577b34da6a3ce929d0e0e4736" + "-" + "00f067aa0ba902b7" + "-01"

SDK_SNIPPET = """
import statistics, sys, tempfile, time
from pathlib import Path
from logicbundle.sdk import LogicHost
from tests.sdk.conftest import BUNDLE, IFACE, simple, write_bundle_at
traced = sys.argv[1] == "on"
if traced:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    trace.set_tracer_provider(TracerProvider())
    span = trace.get_tracer("app").start_span("request")
    scope = trace.use_span(span, end_on_exit=True)
    scope.__enter__()
root = Path(tempfile.mkdtemp())
one = write_bundle_at(root, simple("one"))
host = LogicHost(name=BUNDLE, interface=IFACE, root=root)
host.activate(one.digest, one.path)
routed = host.function("add")
direct = host._route[0].obj.add
BATCH, BATCHES = 2000, int(sys.argv[2])
def per_call(fn):
    t = time.perf_counter_ns()
    for _ in range(BATCH):
        fn(1, 2)
    return (time.perf_counter_ns() - t) / BATCH
diffs, proxied = [], []
for _ in range(BATCHES):
    p = per_call(routed)
    d = per_call(direct)
    diffs.append(p - d)
    proxied.append(p)
print(statistics.median(diffs), statistics.median(proxied))
"""


def sdk_overhead(batches: int) -> dict[str, tuple[float, float]]:
    out = {}
    for mode in ("off", "on"):
        done = subprocess.run(
            [sys.executable, "-c", SDK_SNIPPET, mode, str(batches)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": f"{REPO / 'operator'}:{REPO}"},
            capture_output=True,
            text=True,
            check=True,
        )
        overhead, routed = (float(x) for x in done.stdout.split())
        out[mode] = (overhead, routed)
    return out


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def agent_rss_once(*, traced: bool, rest: float) -> float:
    """MiB resident after a swap to the published digest (traced or not) and ``rest`` s."""
    root = Path(tempfile.mkdtemp(prefix="lbt-", dir="/tmp"))
    try:
        install(EXAMPLES_DIR / "pricing-v1", root=root, make_current=True)
        v2 = install(EXAMPLES_DIR / "pricing-v2", root=root).digest
        annotations = {
            contract.ANNOTATION_COHORT_KEY: "bench/web-0",
            contract.ANNOTATION_ADMITTED_AT: str(time.time_ns() // 1_000_000),
        }
        _write(root / "annotations", format_annotations(annotations).encode())
        _write(root / "labels", format_annotations({"app": "bench"}).encode())
        state = contract.RolloutState(
            bundle=BUNDLE, stable=v2, revision=2, traceparent=TRACEPARENT if traced else None
        )
        _write(
            root / "state" / contract.state_file_name(BUNDLE),
            json.dumps(contract.state_to_json(state)).encode(),
        )
        port = free_port()
        config = {
            "root": str(root),
            "annotationsFile": str(root / "annotations"),
            "labelsFile": str(root / "labels"),
            "stateDir": str(root / "state"),
            "socket": str(root / "sdk.sock"),
            "listen": f"127.0.0.1:{port}",
            "bundles": {BUNDLE: {"source": "registry.invalid/shop/pricing"}},
        }
        (root / "agent.json").write_text(json.dumps(config))
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'operator'}:{REPO}"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "logicbundle.agent", "--config", str(root / "agent.json")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            current = root / BUNDLE / contract.CURRENT_LINK
            wait_for(
                lambda: current.resolve().name == v2,
                what="the agent swapped to the published digest",
                timeout=60,
            )
            time.sleep(rest)  # a benchmark, not a test: the agent at rest after its swap
            return rss_bytes(proc.pid) / 2**20
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def agent_rss(*, runs: int, rest: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(runs):
        for mode in ("off", "on"):  # interleaved: both see the same machine
            out[mode].append(agent_rss_once(traced=mode == "on", rest=rest))
    return out


ROLLOUT: dict[str, Any] = {
    "skipAnalysis": True,
    "stages": [{"name": "canary", "percent": 5}, {"name": "all", "all": True}],
}


async def _rollouts(
    bench: br.Bench, *, namespace: str, pods: int, rounds: int, digests: Mapping[str, str]
) -> list[float]:
    name, app = BUNDLE, "web"

    def lb(tag: str) -> dict[str, Any]:
        return bench.manifest(name, namespace=namespace, tag=tag, app=app, rollout=ROLLOUT)

    await bench.apply(namespace, [lb("r0")])
    await bench.fleet.wait_reported(namespace, name, digests["r0"], pods, within=120)
    await bench.wait_status(namespace, name, br.ready_on(digests["r0"]), what="Ready on r0")
    cpu: list[float] = []
    for i in range(1, rounds + 1):
        tag = f"r{i}"
        bench.fleet.forget_reports(namespace, name)
        before = br.proc_cpu_seconds(bench.operator.process.pid)
        await bench.apply(namespace, [lb(tag)])
        await bench.wait_status(namespace, name, br.ready_on(digests[tag]), what=f"Ready on {tag}")
        cpu.append(br.proc_cpu_seconds(bench.operator.process.pid) - before)
        print(f"    rollout {tag}: operator CPU {cpu[-1] * 1000:.0f} ms", flush=True)
    return cpu


def _trace_id(status: Mapping[str, Any]) -> str | None:
    parent = contract.parse_traceparent((status.get("targetState") or {}).get("traceparent"))
    return parent.trace_id if parent is not None else None


async def operator_side(
    work: Path, *, pods: int, rounds: int
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    cpu: dict[str, list[float]] = {}
    trace: dict[str, Any] = {}
    nodes = max(2, pods // 150 + 2)
    with (
        Cluster.start(work / "cluster", nodes=nodes) as cluster,
        Registry.start(work / "registry") as registry,
        Jaeger.start(work / "jaeger") as jaeger,
    ):
        cluster.kubectl("apply", "--server-side", "-f", str(br.CRD_FILE))
        cluster.wait_established("logicbundles.logicbundle.io")
        key = KeyPair.generate()
        for mode in ("off", "on"):
            namespace = f"trace-{mode}"
            saved = dict(os.environ)
            if mode == "on":
                os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = jaeger.otlp_url
            try:
                operator = Operator.start(cluster, work / f"operator-{mode}")
            finally:
                os.environ.clear()
                os.environ.update(saved)
            api, fleet = br.Api(cluster), br.Fleet(operator.distributor_url)
            bench = br.Bench(cluster, registry, operator, key, api, fleet)
            try:
                print(f"  tracing {mode}: {pods} pods", flush=True)
                await br.make_namespace(api, namespace)
                await api.call(
                    "POST",
                    f"/apis/apps/v1/namespaces/{namespace}/deployments",
                    br.deployment("web", pods),
                )
                await br.wait_until(
                    functools.partial(br.deployment_settled, api, namespace, "web"),
                    what=f"{pods} pods ready",
                    within=300,
                    every=0.2,
                )
                digests = await asyncio.to_thread(
                    bench.push, namespace, [f"r{i}" for i in range(rounds + 1)]
                )
                await fleet.add(api, namespace, await br.pods_of(api, namespace, "web"))
                cpu[mode] = await _rollouts(
                    bench, namespace=namespace, pods=pods, rounds=rounds, digests=digests
                )
                if mode == "on":
                    trace = await asyncio.to_thread(
                        _read_trace, jaeger, await bench.status(namespace, BUNDLE), pods, namespace
                    )
            finally:
                await fleet.close()
                await api.close()
                operator.stop()
    return cpu, trace


def _read_trace(jaeger: Jaeger, status: Mapping[str, Any], pods: int, ns: str) -> dict[str, Any]:
    trace_id = _trace_id(status)
    if trace_id is None:
        raise RuntimeError("tracing on, but the published state carries no traceparent")

    def complete() -> list[dict[str, Any]] | None:
        spans = jaeger.trace(trace_id)
        swaps = [s for s in spans if s["operationName"].startswith("swap ")]
        root = any(s["operationName"] == f"rollout {ns}/{BUNDLE}" for s in spans)
        return spans if root and len(swaps) >= pods else None

    spans = wait_for(complete, what="the last rollout's whole trace in Jaeger", timeout=60)
    with urllib.request.urlopen(f"{jaeger.query_url}/api/traces/{trace_id}", timeout=30) as r:
        raw = r.read()
    return {
        "trace_id": trace_id,
        "spans": len(spans),
        "swaps": sum(1 for s in spans if s["operationName"].startswith("swap ")),
        "json_bytes": len(raw),
        "otlp_bytes": _otlp_size(raw),
    }


def _otlp_size(jaeger_json: bytes) -> int:
    """The trace's spans re-encoded as one OTLP/protobuf export request (bytes)."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    request = trace_service_pb2.ExportTraceServiceRequest()
    (data,) = json.loads(jaeger_json)["data"]
    scope = request.resource_spans.add().scope_spans.add()
    for span in data["spans"]:
        out = scope.spans.add()
        out.trace_id = bytes.fromhex(span["traceID"])
        out.span_id = bytes.fromhex(span["spanID"])
        for ref in span.get("references") or []:
            out.parent_span_id = bytes.fromhex(ref["spanID"])
        out.name = span["operationName"]
        out.start_time_unix_nano = span["startTime"] * 1000
        out.end_time_unix_nano = (span["startTime"] + span["duration"]) * 1000
        for tag in span.get("tags") or []:
            out.attributes.append(
                common_pb2.KeyValue(
                    key=tag["key"], value=common_pb2.AnyValue(string_value=str(tag["value"]))
                )
            )
        for log in span.get("logs") or []:
            event = trace_pb2.Span.Event(time_unix_nano=log["timestamp"] * 1000)
            for field in log.get("fields") or []:
                event.attributes.append(
                    common_pb2.KeyValue(
                        key=field["key"],
                        value=common_pb2.AnyValue(string_value=str(field["value"])),
                    )
                )
            out.events.append(event)
    return len(request.SerializeToString())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.bench.bench_tracing")
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sdk-batches", type=int, default=300)
    parser.add_argument("--agent-runs", type=int, default=3)
    parser.add_argument("--rest", type=float, default=10.0)
    parser.add_argument("--only", choices=("sdk", "agent", "operator"), action="append")
    args = parser.parse_args(argv)
    parts = set(args.only or ("sdk", "agent", "operator"))
    rows: list[tuple[str, str]] = []
    if "sdk" in parts:
        sdk = sdk_overhead(args.sdk_batches)
        for mode, (overhead, routed) in sdk.items():
            rows.append(
                (
                    f"SDK per call, tracing {mode}",
                    f"{overhead:.0f} ns over a direct call ({routed:.0f} ns routed)",
                )
            )
    if "agent" in parts:
        rss = agent_rss(runs=args.agent_runs, rest=args.rest)
        for mode, values in rss.items():
            rows.append(
                (
                    f"agent RSS after a swap, tracing {mode}",
                    f"median {statistics.median(values):.2f} MiB "
                    f"({', '.join(f'{v:.2f}' for v in values)})",
                )
            )
    if "operator" in parts:
        work = Path(tempfile.mkdtemp(prefix="lb-bench-tracing-"))
        try:
            cpu, trace = asyncio.run(operator_side(work, pods=args.pods, rounds=args.rounds))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for mode, values in cpu.items():
            rows.append(
                (
                    f"operator CPU per rollout, {args.pods} pods, tracing {mode}",
                    f"median {statistics.median(values) * 1000:.0f} ms (min "
                    f"{min(values) * 1000:.0f}, max {max(values) * 1000:.0f}, n={len(values)})",
                )
            )
        if trace:
            rows.append(
                (
                    f"trace of one {args.pods}-pod rollout",
                    f"{trace['spans']} spans ({trace['swaps']} swaps); "
                    f"{trace['json_bytes'] / 1024:.0f} KiB as Jaeger's JSON, "
                    f"{trace['otlp_bytes'] / 1024:.0f} KiB as OTLP/protobuf",
                )
            )
    print()
    for what, figure in rows:
        print(f"  {what:<52} {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
