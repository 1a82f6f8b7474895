# The two set-up commands of the README. Both create or reuse .venv/ first.
.PHONY: quickstart test test-fast test-cluster test-cluster-node-loss lint bench venv

venv:
	@scripts/ensure-venv.sh

quickstart: venv
	.venv/bin/hwd-tune quickstart

test: venv
	.venv/bin/python -m pytest

# End to end on a Postgres + S3 + MLflow + 3-node Ray stack (scripts/cluster-up.sh; needs root).
# The 3-node stack end to end (issue 17). The node-loss step has its own target until it passes:
# its sweep restarts the lost trials but then ends with a FileNotFoundError (see issue 17's note).
test-cluster: venv
	.venv/bin/python -m pytest -m cluster tests/cluster -k "not worker_node_lost"

test-cluster-node-loss: venv
	.venv/bin/python -m pytest -m cluster tests/cluster

test-fast: venv
	.venv/bin/python -m pytest -m "not slow"

# Style (ruff) and the layer contracts of docs/architecture.md (import-linter, in pyproject.toml).
lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

bench: venv
	MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 .venv/bin/python benchmarks/losses.py
