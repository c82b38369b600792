# The README's two commands are `make demo` and `make test`; both set up what they need.
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test lint unit e2e crds bench bench-real-node bench-api-writes bench-fleet bench-soak bench-tracing

setup:
	@e2e/setup.sh

# The demo and the e2e suites run in a network namespace of their own (e2e/harness/netns.py):
# the real node's pods, bridge and iptables rules never touch the machine's network.
NETNS := $(PY) -m e2e.harness.netns --

demo: setup
	$(NETNS) $(PY) -m e2e.demo $(ARGS)

test: setup lint unit e2e

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports
	$(PY) -m logicbundle.api.crd --check

# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
unit:
	@$(PY) -m pytest -m "not e2e" -q; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "error: no unit tests were collected" >&2; exit 1; fi; exit $$rc

# The e2e fixtures run servers in threads; a socket they leave to the garbage collector at
# interpreter exit warns (shown) instead of failing a green run. Unit tests stay strict.
# The binaries and the images are built (or found cached) first: the namespace has no way
# out to the Go proxy, PyPI or Debian.
e2e:
	@$(PY) -m e2e.harness.build
	@$(PY) -m e2e.harness.images build
	@$(NETNS) $(PY) -m pytest -m e2e -q -W "default::ResourceWarning"; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "error: no e2e tests were collected" >&2; exit 1; fi; exit $$rc

bench:
	$(PY) -m e2e.bench.bench_cluster

# Issue 9's figures on the real node (docs/benchmarks.md); in the namespace, like e2e.
bench-real-node:
	@$(PY) -m e2e.harness.build
	@$(PY) -m e2e.harness.images build
	$(NETNS) $(PY) -m e2e.bench.bench_real_node $(ARGS)

# Issue 10's BEFORE figure: API writes per rollout step at 20, 200, 2,000 kwok pods (docs/benchmarks.md).
bench-api-writes:
	@$(PY) -m e2e.harness.build
	$(PY) -m e2e.bench.bench_api_writes $(ARGS)

# Issue 10's scale figures: 1,000 LogicBundles x 10 simulated agents, 1/2/4 distributor replicas
# (docs/benchmarks.md); about 10 minutes, in the namespace like e2e.
bench-fleet:
	@$(PY) -m e2e.harness.build
	$(NETNS) $(PY) -m e2e.bench.bench_fleet $(ARGS)

# Issue 11's soak: 500 rollouts of one bundle, then 50 rounds of 100 bundles at once; operator
# RSS, fds and reconcile p99 after warm-up and at the end (docs/benchmarks.md); about 15 minutes.
bench-soak:
	@$(PY) -m e2e.harness.build
	$(NETNS) $(PY) -m e2e.bench.bench_soak $(ARGS)

# Issue 12's tracing costs: SDK per call, agent RSS, operator CPU per 200-pod rollout, off and
# on, and the size of one rollout's trace in Jaeger (docs/benchmarks.md); about 10 minutes.
bench-tracing:
	@$(PY) -m e2e.harness.build
	$(NETNS) $(PY) -m e2e.bench.bench_tracing $(ARGS)
