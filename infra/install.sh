#!/usr/bin/env bash
# Install pds into ./.venv (Python >= 3.11). Uses uv when present (seconds), else installs it first.
# Usage: infra/install.sh [extra]    e.g. infra/install.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
python=${PYTHON:-python3}
if ! command -v uv >/dev/null 2>&1; then
  "$python" -m pip install --quiet --disable-pip-version-check uv
fi
[ -x .venv/bin/python ] || uv venv --quiet --python "$python" .venv
spec="."
[ -n "$extra" ] && spec=".[$extra]"
uv pip install --quiet --python .venv/bin/python -e "$spec"
