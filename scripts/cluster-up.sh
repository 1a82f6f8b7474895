#!/usr/bin/env bash
# Starts the compose stack's roles without Docker (Postgres, S3, MLflow, a Ray head and two Ray
# workers in network namespaces of their own), all under STATE_DIR; see scripts/cluster_stack.py.
#
#   scripts/cluster-up.sh /tmp/hwd-cluster && source /tmp/hwd-cluster/cluster.env
#   ... ray job submit ...
#   scripts/cluster-down.sh /tmp/hwd-cluster
#
# Needs root and Debian's postgresql package (installed here when missing). A failed start stops
# whatever it had started. HWD_PYTHON: the Python of the venv to run (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
state_dir=${1:?usage: scripts/cluster-up.sh STATE_DIR}
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && [[ -z "${HWD_PG_BIN:-}" ]]; then
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
exec "${HWD_PYTHON:-.venv/bin/python}" scripts/cluster_stack.py up "$state_dir"
