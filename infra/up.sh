#!/usr/bin/env bash
# Install pds and start the whole system on its embedded default:
# a local Prefect server (SQLite), the API on 127.0.0.1:8440 and one mover, all data under ./pds-data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/install.sh
exec .venv/bin/pds up "$@"
