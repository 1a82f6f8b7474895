# The two set-up commands of the README. Both create or reuse .venv/ first.
.PHONY: quickstart test test-fast test-cluster lint bench venv

venv:
	@scripts/ensure-venv.sh

quickstart: venv
	.venv/bin/hwd-tune quickstart

test: venv
	.venv/bin/python -m pytest

# End to end on a Postgres + S3 + MLflow + 3-node Ray stack (scripts/cluster-up.sh; needs root):
# issue 17's steps, the lost worker node last. HWD_CLUSTER_LOGS=DIR keeps the jobs' logs.
test-cluster: venv
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
