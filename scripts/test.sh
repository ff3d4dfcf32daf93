#!/usr/bin/env bash
# Install what the tests need, lint, then run the whole suite. Arguments go to pytest, e.g.
#   scripts/test.sh tests/test_nodes_image.py -k save -x
# LOOM_SKIP_LINT=1 skips `ruff check .` (handy while iterating on one test); LOOM_TEST_WORKERS=N
# sets the parallel pytest workers (default: one per CPU; 0: none).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
./scripts/setup.sh --test
# Browser tests drive Debian's Chromium through Playwright (never a downloaded browser).
if ! command -v chromium >/dev/null 2>&1 && [[ -z "${LOOM_CHROMIUM:-}" ]]; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "[test] installing Chromium from Debian's packages (browser tests)" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "[test] Chromium is missing: run 'sudo apt-get install -y chromium' (or set" \
             "LOOM_CHROMIUM); browser tests are skipped outside CI" >&2
    fi
fi

# Tests never reach a model hub (tests/conftest.py also refuses non-loopback sockets).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DIFFUSERS_OFFLINE=1

# The committed editor bundle (web/dist) must be what its sources build to.
if command -v npm >/dev/null 2>&1; then
    ./scripts/build_web.sh --check
elif [[ -n "${CI:-}" ]]; then
    echo "[test] npm is missing: CI must check the editor bundle (install Node 20+)" >&2
    exit 1
else
    echo "[test] npm is not installed: skipping the editor bundle check (scripts/build_web.sh --check)" >&2
fi

if [[ "${LOOM_SKIP_LINT:-0}" != 1 ]]; then
    echo "[test] ruff check ." >&2
    .venv/bin/ruff check .
fi
args=(-ra)
# Parallel workers, one test file each (module-scoped servers and browsers stay in one worker);
# LOOM_TEST_WORKERS=0 runs in this process (e.g. for pdb).
workers="${LOOM_TEST_WORKERS:-auto}"
if [[ "$workers" != 0 ]]; then args+=(-n "$workers" --dist loadfile); fi
if [[ -n "${CI:-}" ]]; then args+=(--durations=15); fi
echo "[test] pytest ${args[*]} $*" >&2
exec .venv/bin/python -m pytest "${args[@]}" "$@"
