#!/usr/bin/env bash
# Stops what scripts/cluster-up.sh STATE_DIR started, by PID, and deletes its network namespaces,
# bridge and STATE_DIR. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
state_dir=${1:?usage: scripts/cluster-down.sh STATE_DIR}
exec "${HWD_PYTHON:-.venv/bin/python}" scripts/cluster_stack.py down "$state_dir"
