#!/usr/bin/env bash
# Build the browser editor (web/src -> web/dist) with Vite. The bundle is committed, so running
# Loom needs no Node; rebuild and commit it after changing anything under web/.
#   scripts/build_web.sh          rebuild web/dist
#   scripts/build_web.sh --check  rebuild in a temporary folder and compare byte for byte with the
#                                 committed web/dist (scripts/test.sh runs this)
# Needs Node 20+ and npm. npm versions are pinned in web/package.json and web/package-lock.json
# (`npm install` reads the lock file; some npm mirrors lack optional packages `npm ci` insists on).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WEB="$REPO/web"
cd "$WEB"

if ! command -v npm >/dev/null 2>&1; then
    echo "[web] npm is not installed: install Node 20+ to build the editor" >&2
    exit 2
fi
# Install the pinned packages when they are missing or older than the lock file.
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
    echo "[web] npm install" >&2
    npm install --no-audit --no-fund --loglevel=error >&2
fi

SOURCES=(index.html package.json package-lock.json tsconfig.json vite.config.ts src)

if [[ "${1:-}" == "--check" ]]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    cp -r "${SOURCES[@]}" "$tmp/"
    ln -s "$WEB/node_modules" "$tmp/node_modules"
    (cd "$tmp" && node node_modules/vite/bin/vite.js build --logLevel warn >&2)
    if ! diff -r -q "$tmp/dist" "$WEB/dist"; then
        echo "[web] FAIL: the committed web/dist does not match web/src." >&2
        echo "[web] Run scripts/build_web.sh and commit web/dist together with the sources." >&2
        exit 1
    fi
    echo "[web] web/dist matches its sources" >&2
    exit 0
fi

node node_modules/vite/bin/vite.js build --logLevel warn
echo "[web] built $(du -sh dist | cut -f1) in web/dist" >&2
