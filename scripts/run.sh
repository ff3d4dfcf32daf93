#!/usr/bin/env bash
# Quick start: set up .venv when needed (fast when it is current), then start Loom.
# Arguments go to main.py (see `scripts/run.sh --help`); it listens on 127.0.0.1:8188 by default.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
./scripts/setup.sh
exec "$REPO/.venv/bin/python" main.py "$@"
