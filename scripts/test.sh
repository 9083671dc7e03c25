#!/usr/bin/env bash
# Run the test suite against the local PostgreSQL and Redis that scripts/setup-host.sh
# started. Extra arguments go to pytest (e.g. `bash scripts/test.sh -k quota -x`).
set -uo pipefail
cd "$(dirname "$0")/.."

export HAKO_DATABASE_URL=${HAKO_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/hako_test}
export HAKO_BROKER_URL=${HAKO_BROKER_URL:-redis://127.0.0.1:6379/15}
export DJANGO_SETTINGS_MODULE=panel.settings

[ -x .venv/bin/python ] || { echo "[test] .venv missing: run 'make setup' first" >&2; exit 2; }

.venv/bin/python -m pytest -p no:cacheprovider tests "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "[test] FAILED: pytest collected no tests (exit 5)" >&2
fi
exit "$rc"
