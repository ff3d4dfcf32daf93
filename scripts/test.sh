#!/usr/bin/env bash
# Install what the tests need, lint, then run the whole suite. Arguments go to pytest, e.g.
#   scripts/test.sh tests/test_nodes_image.py -k save -x
# LOOM_SKIP_LINT=1 skips `ruff check .` (handy while iterating on one test).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
./scripts/setup.sh --test
# Browser tests will need Chromium (`apt-get install -y chromium`); none does yet.

# Tests never reach a model hub (tests/conftest.py also refuses non-loopback sockets).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DIFFUSERS_OFFLINE=1

if [[ "${LOOM_SKIP_LINT:-0}" != 1 ]]; then
    echo "[test] ruff check ." >&2
    .venv/bin/ruff check .
fi
args=(-ra)
if [[ -n "${CI:-}" ]]; then args+=(--durations=15); fi
echo "[test] pytest ${args[*]} $*" >&2
exec .venv/bin/python -m pytest "${args[@]}" "$@"
