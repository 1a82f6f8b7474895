#!/usr/bin/env bash
# Creates or reuses the project's virtual environment .venv/ and installs hwd-tune into it.
# Re-installs only when pyproject.toml or requirements.lock changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP="$VENV/.hwd-tune-installed"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[hwd-tune] creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi

want=$(cat pyproject.toml requirements.lock 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi

# The lock pins every package for Linux x86_64 + CPython 3.11 (the machines CI runs on);
# elsewhere the ranges in pyproject.toml apply.
constraint=()
if [ "$(uname -sm)" = "Linux x86_64" ] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    constraint=(-c requirements.lock)
fi

echo "[hwd-tune] installing hwd-tune and its stack into $VENV (first time: a few minutes)"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "${constraint[@]}" -e ".[dev]"
echo "$want" > "$STAMP"
