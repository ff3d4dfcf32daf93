"""Heavy libraries are imported once, off the event loop, before serving; an import failure is
the server's error, never a user's invalid prompt."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from loom.config import REPO_ROOT

PACK = textwrap.dedent('''
    import asyncio
    import os
    import time

    from loom.nodeapi import Int, Node, Output

    def warm_up():
        time.sleep(0.3)  # "importing diffusers"
        try:
            asyncio.get_running_loop()
            where = "event-loop"
        except RuntimeError:
            where = "thread"
        with open(os.environ["WARM_UP_LOG"], "a") as f:
            f.write(where + "\\n")

    class NeedsLibrary(Node):
        output_node = True
        inputs = {"value": Int(0)}
        outputs = (Output("INT"),)

        @classmethod
        def validate_inputs(cls, ctx, **inputs):
            import loom_no_such_library  # noqa: F401  (a dependency the server lacks)

        def run(self, value):
            return (value,)

    NODES = [NeedsLibrary]
''')


def test_first_scheduler_lookups_from_many_threads_at_once():
    """A fresh process, six threads validating KSampler pairs at the same moment: diffusers'
    lazy attributes used to answer "module 'diffusers' has no attribute ..." to some."""
    script = textwrap.dedent('''
        import threading
        from loom.runtime import torchvision_fix
        torchvision_fix.install()
        from loom.runtime.sampling.schedulers import unsupported_reason
        pairs = [("euler", "normal"), ("ddim", "normal"), ("dpmpp_2m", "karras"),
                 ("heun", "normal"), ("lcm", "normal"), ("uni_pc", "normal")]
        barrier, errors = threading.Barrier(len(pairs)), []
        def check(pair):
            barrier.wait()
            try:
                assert unsupported_reason(*pair) is None, pair
            except Exception as e:
                errors.append(repr(e))
        threads = [threading.Thread(target=check, args=(p,)) for p in pairs]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print("ERRORS", errors)
    ''')
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=300)
    assert "ERRORS []" in out.stdout, out.stdout + out.stderr


def test_warm_ups_run_off_the_loop_before_serving_and_import_errors_are_not_400s(
        loom_server_factory, tmp_path, monkeypatch):
    packs = tmp_path / "packs"
    packs.mkdir()
    (packs / "needs_library.py").write_text(PACK)
    log = tmp_path / "warm_up.log"
    monkeypatch.setenv("WARM_UP_LOG", str(log))
    server = loom_server_factory(custom_nodes_dir=packs)
    # Done by the time the server answers, once, in a thread that is not the event loop's.
    assert log.read_text().splitlines() == ["thread"]
    assert server.get("/object_info/NeedsLibrary").status == 200
    r = server.post("/prompt", json={"prompt": {"1": {"class_type": "NeedsLibrary",
                                                      "inputs": {"value": 1}}}})
    assert r.status == 503, r.text
    error = r.json()["error"]
    assert error["type"] == "server_setup_error"
    assert "loom_no_such_library" in error["message"] and "server log" in error["message"]
    assert len(log.read_text().splitlines()) == 1
