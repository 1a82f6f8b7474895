# The two set-up commands of the README. Both create or reuse .venv/ first.
.PHONY: quickstart test test-fast lint bench venv

venv:
	@scripts/ensure-venv.sh

quickstart: venv
	.venv/bin/hwd-tune quickstart

test: venv
	.venv/bin/python -m pytest

test-fast: venv
	.venv/bin/python -m pytest -m "not slow"

# Style (ruff) and the layer contracts of docs/architecture.md (import-linter, in pyproject.toml).
lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

bench: venv
	MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 .venv/bin/python benchmarks/losses.py
