#!/usr/bin/env bash
# Install what the tests need and run them: lint (ruff), types (mypy, strict on catalog),
# import layers (import-linter), then pytest against real servers the tests start themselves.
# Extra arguments go to pytest, e.g. infra/test.sh -k sftp
#
# pytest runs in parallel workers (pytest-xdist, --dist loadgroup): most of a test's time is spent
# waiting on servers, so more workers than cores still finish sooner. Each worker starts its own
# session servers on its own ports. PDS_TEST_WORKERS sets how many (0 runs every test in this one
# process, in order); `-n N` among the arguments overrides it too.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'echo "== infra/test.sh: ${SECONDS} s"' EXIT
bash infra/test-deps.sh
bash infra/install.sh test
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff";          ruff check .
echo "== mypy";          mypy
echo "== import-linter"; lint-imports
echo "== docs";          NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
echo "== pytest";        pytest -n "${PDS_TEST_WORKERS:-3}" --dist loadgroup "$@"
