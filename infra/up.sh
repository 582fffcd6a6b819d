#!/usr/bin/env bash
# Install pds and start the whole system on its embedded default:
# a local Prefect server (SQLite), the API on 127.0.0.1:8440 and one mover, all data under ./pds-data.
set -euo pipefail
cd "$(dirname "$0")/.."
# Install only when needed (first run, or pyproject.toml changed since): an installed pds starts, or says
# at once that it is already running on this data directory, without waiting for the installer.
stamp=.venv/.pds-installed
if [ ! -x .venv/bin/pds ] || [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  bash infra/install.sh
  touch "$stamp"
else
  .venv/bin/python -m compileall -q catalog blocks tasks flows api >/dev/null  # code changed since: seconds saved per process
fi
exec .venv/bin/pds up "$@"
