#!/usr/bin/env bash
# Install what the tests need and run them: lint (ruff), types (mypy, strict on catalog),
# import layers (import-linter), then pytest against real servers the tests start themselves.
# Extra arguments go to pytest, e.g. infra/test.sh -k sftp
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/test-deps.sh
bash infra/install.sh test
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff";          ruff check .
echo "== mypy";          mypy
echo "== import-linter"; lint-imports
echo "== docs";          NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
echo "== pytest";        pytest "$@"
