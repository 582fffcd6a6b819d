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
# Bytecode is compiled now, not at each process's imports: where PYTHONDONTWRITEBYTECODE is set it
# would never be written, and every process (a mover, `pds`, a listing process) would compile
# Prefect's and asyncssh's sources again as it starts (measured: `import prefect` 2.1 s → 1.2 s).
uv pip install --quiet --compile-bytecode --python .venv/bin/python -e "$spec"
.venv/bin/python -m compileall -q catalog blocks tasks flows api >/dev/null
