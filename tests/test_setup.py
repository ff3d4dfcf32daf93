"""The set-up, run and CI scripts, the README's quick start, and the repository layout.

setup.sh is exercised for real in a scratch copy of the repository whose ``.venv/bin/python``
is a stub: it records every pip call (and the environment it got) instead of installing, so the
order, pins, constraints, the torchvision fix and the skip-when-current stamp are checked in
well under a second each.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ["scripts/setup.sh", "scripts/run.sh", "scripts/test.sh", ".ci/run"]

STUB = r"""#!/usr/bin/env bash
# Stands in for .venv/bin/python: logs pip calls, answers the questions setup.sh asks.
{ printf 'CALL'; printf ' %q' "$@"; printf ' | PIP_CONSTRAINT=%s\n' "${PIP_CONSTRAINT:-}"; } >> "$STUB_LOG"
if [[ "$1 $2" == "-m pip" ]]; then exit "${STUB_PIP_RC:-0}"; fi
case "$*" in
    *sysconfig*) echo "$STUB_SITE"; exit 0 ;;
    *diffusers*) echo "verified"; exit "${STUB_VERIFY_RC:-0}" ;;
esac
exec "$STUB_REAL_PY" "$@"
"""


@pytest.fixture
def scratch(tmp_path):
    """A copy of what setup.sh reads, with a stub venv; returns a runner."""
    repo = tmp_path / "repo"
    for rel in ["scripts/setup.sh", "requirements.txt", "requirements-test.txt", "constraints.txt",
                "requirements-nodeps.txt", "loom/runtime/torchvision_fix.py"]:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, repo / rel)
    site = tmp_path / "site-packages"
    site.mkdir()
    py = repo / ".venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text(STUB)
    py.chmod(0o755)
    log = tmp_path / "calls.log"

    def run(*args, **env):
        log.write_text("")
        full_env = {**os.environ, "STUB_LOG": str(log), "STUB_SITE": str(site),
                    "STUB_REAL_PY": sys.executable, "PIP_CONSTRAINT": "", **env}
        if "LOOM_TORCH_INDEX" not in env:
            full_env.pop("LOOM_TORCH_INDEX", None)
        proc = subprocess.run(["bash", str(repo / "scripts/setup.sh"), *args], env=full_env,
                              capture_output=True, text=True, timeout=60)
        pip_calls = [line for line in log.read_text().splitlines() if " -m pip " in line]
        return proc, pip_calls

    run.repo, run.site = repo, site
    return run


def test_first_setup_installs_in_order_with_pins_and_constraints(scratch):
    proc, pip = scratch()
    assert proc.returncode == 0, proc.stderr
    assert len(pip) == 4
    torch_call, tv_call, req_call, nodeps_call = pip
    assert "torch==2.13.0" in torch_call
    assert "torchvision==0.28.0" in tv_call and "--no-deps" in tv_call
    assert "-r" in req_call and str(scratch.repo / "requirements.txt") in req_call
    assert "--no-deps" in nodeps_call and str(scratch.repo / "requirements-nodeps.txt") in nodeps_call
    for call in pip:  # the environment variable, so source builds get it too
        assert call.endswith(f"PIP_CONSTRAINT={scratch.repo / 'constraints.txt'}")
    if Path("/opt/wheels").is_dir():
        assert "--find-links /opt/wheels" in torch_call
    # one progress line per step
    for step in ("installing torch", "installing torchvision", "installing requirements.txt",
                 "installing requirements-nodeps.txt", "torchvision fix", "checking that diffusers", "done"):
        assert step in proc.stderr, step


def test_setup_installs_the_torchvision_fix_into_site_packages(scratch):
    proc, _ = scratch()
    assert proc.returncode == 0, proc.stderr
    fix = scratch.site / "loom_torchvision_fix.py"
    assert fix.read_bytes() == (REPO / "loom/runtime/torchvision_fix.py").read_bytes()
    pth = (scratch.site / "loom-torchvision-fix.pth").read_text()
    assert pth.strip() == "import loom_torchvision_fix; loom_torchvision_fix.install()"


def test_second_setup_skips_pip_until_a_requirement_file_changes(scratch):
    assert scratch()[0].returncode == 0
    proc, pip = scratch()
    assert proc.returncode == 0 and pip == []
    assert "up to date" in proc.stderr

    with open(scratch.repo / "requirements.txt", "a") as f:
        f.write("# a new pin\n")
    proc, pip = scratch()
    assert proc.returncode == 0 and len(pip) == 4

    # The fix file changed in the repo (or was deleted from the venv): reinstalled.
    (scratch.site / "loom_torchvision_fix.py").unlink()
    proc, pip = scratch()
    assert proc.returncode == 0 and (scratch.site / "loom_torchvision_fix.py").exists()


def test_test_setup_adds_the_test_requirements_and_covers_the_runtime_set(scratch):
    proc, pip = scratch("--test")
    assert proc.returncode == 0, proc.stderr
    assert str(scratch.repo / "requirements-test.txt") in pip[-1]
    assert scratch()[1] == []  # runtime set-up is then current too
    assert scratch("--test")[1] == []


def test_gpu_index_is_used_for_torch_only(scratch):
    proc, pip = scratch(LOOM_TORCH_INDEX="https://example.invalid/whl/cu128")
    assert proc.returncode == 0, proc.stderr
    assert "--index-url https://example.invalid/whl/cu128" in pip[0]
    assert all("example.invalid" not in c for c in pip[1:])


def test_failures_stop_setup_and_leave_no_stamp(scratch):
    proc, _ = scratch(STUB_PIP_RC="1")
    assert proc.returncode != 0
    proc, _ = scratch(STUB_VERIFY_RC="1")
    assert proc.returncode != 0 and "do not import" in proc.stderr
    proc, pip = scratch()  # nothing was marked as done: it all runs again
    assert proc.returncode == 0 and len(pip) == 4


def test_unknown_argument_is_refused(scratch):
    proc, pip = scratch("--bogus")
    assert proc.returncode == 2 and pip == []


# -- scripts, CI and README ----------------------------------------------------------------------


@pytest.mark.parametrize("rel", SCRIPTS)
def test_scripts_are_executable_strict_bash(rel):
    path = REPO / rel
    assert path.stat().st_mode & stat.S_IXUSR, f"{rel} is not executable"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_ci_runs_the_test_script_and_the_test_script_lints_and_tests():
    ci = (REPO / ".ci/run").read_text()
    assert re.search(r"^exec \./scripts/test\.sh\s*$", ci, re.M)
    test = (REPO / "scripts/test.sh").read_text()
    assert "scripts/setup.sh --test" in test
    assert ".venv/bin/ruff check ." in test and "-m pytest" in test and '"$@"' in test
    run = (REPO / "scripts/run.sh").read_text()
    assert "./scripts/setup.sh" in run and 'main.py "$@"' in run


def test_readme_quick_start_is_exactly_two_commands():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["./scripts/run.sh", "./scripts/test.sh"]
    for script in commands:
        assert (REPO / script).is_file()


def test_pins_keep_torch_cpu_and_everything_exact():
    constraints = (REPO / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", constraints, re.M)
    assert re.search(r"^torchvision==0\.28\.0$", constraints, re.M)
    for name in ("requirements.txt", "requirements-test.txt", "requirements-nodeps.txt"):
        for line in (REPO / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                assert "==" in line, f"{name}: {line!r} is not pinned"


def test_model_placeholders_and_input_folder_are_tracked():
    tracked = subprocess.run(["git", "ls-files", "models", "input"], cwd=REPO, capture_output=True,
                             text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    files = set(tracked.stdout.split())
    for folder in ("checkpoints", "vae", "loras", "embeddings", "controlnet", "upscale_models"):
        assert f"models/{folder}/put_{folder}_here" in files
    assert "input/.gitkeep" in files
    # and what users put there is not
    for user_file in ("models/checkpoints/x.safetensors", "input/photo.png"):
        assert subprocess.run(["git", "check-ignore", "-q", user_file], cwd=REPO).returncode == 0


def test_main_help_explains_every_flag():
    import main

    parser = main.build_parser()
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert flags, "main.py declares no flags"
    for action in flags:
        assert action.help and len(action.help.strip()) >= 5, f"{action.option_strings} has no help text"
    out = subprocess.run([sys.executable, str(REPO / "main.py"), "--help"], capture_output=True,
                         text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    for action in flags:
        assert action.option_strings[0] in out.stdout
    for flag in ("--listen", "--port", "--disable-custom-nodes"):
        assert flag in out.stdout
    assert "127.0.0.1" in out.stdout and "8188" in out.stdout
