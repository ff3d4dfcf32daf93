"""Start the Loom server: ``python main.py --help``."""

from loom.runtime import torchvision_fix  # first: before anything that may import torchvision

torchvision_fix.install()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from loom.config import REPO_ROOT, VRAM_CHOICES, Settings  # noqa: E402
from loom.paths import Folders  # noqa: E402

log = logging.getLogger("loom")

VRAM_HELP = """where model weights live: 'high' (all stay on the GPU), 'normal' (the models a node
needs are loaded, least recently used ones go back to the CPU when the next do not fit), 'low' (as
normal, but models bigger than half the budget are streamed to the GPU block by block), 'none'
(every model streamed layer by layer: least VRAM, slowest), 'cpu'. 'auto' picks from the free VRAM
at start: 16 GB or more high, 7 GB normal, 1 GB low, below none"""
PREVIEW_HELP = """live previews while sampling, for the clients that ask for them (the editor does; plain
API clients get none): 'latent2rgb' (a cheap projection of the latent, each step) or 'none'. A prompt
may choose its own with extra_data.preview_method"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none or the help text already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "(default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main.py", description="Loom: a local node-graph studio for image generation.",
        formatter_class=_HelpFormatter)
    net = p.add_argument_group("network and security")
    net.add_argument("--listen", default="127.0.0.1", metavar="ADDRESS",
                     help="address(es) to listen on, comma-separated; anything but loopback needs "
                          "--auth-token or --auth-user")
    net.add_argument("--port", type=int, default=8188, help="TCP port")
    net.add_argument("--auth-token", metavar="TOKEN", default=os.environ.get("LOOM_AUTH_TOKEN"),
                     help="require 'Authorization: Bearer TOKEN' (or a login with it); also read "
                          "from $LOOM_AUTH_TOKEN, which other users cannot see in 'ps' "
                          "(default: $LOOM_AUTH_TOKEN)")
    net.add_argument("--auth-user", metavar="USER:PASSWORD", default=os.environ.get("LOOM_AUTH_USER"),
                     help="require HTTP basic auth (or a login) with this user and password; also "
                          "read from $LOOM_AUTH_USER (default: $LOOM_AUTH_USER)")
    net.add_argument("--allow-unauthenticated-network-access", action="store_true",
                     help="DANGEROUS: listen beyond loopback WITHOUT authentication; anyone who "
                          "can reach this machine can run workflows and read your images")
    net.add_argument("--allowed-origin", action="append", default=[], metavar="ORIGIN",
                     help="an extra origin (scheme://host[:port], e.g. a reverse proxy's) allowed "
                          "to make requests; repeatable")
    net.add_argument("--max-upload-mb", type=int, default=100,
                     help="largest upload (and request body) accepted, in MB")
    net.add_argument("--max-image-megapixels", type=float, default=70.0, metavar="MP",
                     help="largest image file accepted for upload or loading, as width × height "
                          "× frames, in millions of pixels")
    net.add_argument("--request-timeout", type=float, default=30.0, metavar="SECONDS",
                     help="close a connection whose request headers or body stop arriving for "
                          "this long (also the idle keep-alive time)")

    dirs = p.add_argument_group("folders")
    dirs.add_argument("--base-dir", type=Path, default=REPO_ROOT,
                      help="the folder holding models/, input/, output/, temp/ and user/")
    dirs.add_argument("--models-dir", type=Path, help="models folder (default: BASE/models)")
    dirs.add_argument("--input-dir", type=Path, help="input folder (default: BASE/input)")
    dirs.add_argument("--output-dir", type=Path, help="output folder (default: BASE/output)")
    dirs.add_argument("--temp-dir", type=Path, help="temp folder (default: BASE/temp)")
    dirs.add_argument("--user-dir", type=Path,
                      help="user folder: the SQLite database with queue, history and saved "
                           "workflows (default: BASE/user)")
    dirs.add_argument("--reset-damaged-db", action="store_true",
                      help="if the database in the user folder is damaged or not Loom's, rename it "
                           "to loom.sqlite3.damaged-TIME, start a fresh one and copy into it what "
                           "can still be read (without this flag Loom refuses to start and "
                           "changes nothing)")
    dirs.add_argument("--custom-nodes-dir", type=Path,
                      help="folder of custom node packs (default: REPO/custom_nodes)")
    dirs.add_argument("--builtin-nodes-dir", type=Path,
                      help="folder of the built-in node packs (default: REPO/nodes; for "
                           "development and tests)")

    run = p.add_argument_group("execution")
    run.add_argument("--disable-custom-nodes", action="store_true",
                     help="do not load any pack from the custom nodes folder")
    run.add_argument("--workers", type=int, default=1,
                     help="worker threads taking prompts from the queue. They share one model "
                          "manager and one copy of each model; their Python code and CPU work "
                          "overlap, and GPU work from two workers interleaves on the one device "
                          "(no faster than one after the other, but a short prompt need not wait "
                          "for a long one). Two prompts using one model with different LoRAs "
                          "take turns. Each worker has its own output cache")
    run.add_argument("--cache-max-entries", type=int, default=10_000,
                     help="node results kept in the output cache (per worker)")
    run.add_argument("--cache-max-ram-mb", type=int, default=4096,
                     help="RAM the output caches may hold in total for images, latents and other "
                          "results, in MB")
    run.add_argument("--cache-max-model-ram-mb", type=int, default=None,
                     help="RAM of model weights the output caches may keep loaded, in MB; the "
                          "least recently used checkpoints go first, the one in use never "
                          "(default: half of this machine's RAM)")
    run.add_argument("--max-prompt-memory-mb", type=int, default=None, metavar="MB",
                     help="refuse, at validation, prompts whose node outputs (images, latents, "
                          "masks, estimated from their sizes) would take more memory than this "
                          "(default: half of the RAM)")
    run.add_argument("--history-max-items", type=int, default=10_000,
                     help="finished prompts kept in the history")
    run.add_argument("--cpu", action="store_true", help="compute on the CPU even if a GPU is present")
    run.add_argument("--vram", choices=VRAM_CHOICES, default="auto", help=VRAM_HELP)
    run.add_argument("--reserve-vram", type=float, default=None, metavar="GB",
                     help="VRAM left unused for other programs and the driver (default 0.75)")
    run.add_argument("--preview-method", choices=("latent2rgb", "none"), default="latent2rgb",
                     help=PREVIEW_HELP)
    run.add_argument("--disable-metadata", action="store_true",
                     help="save images and latents without the prompt and workflow in them")
    misc = p.add_argument_group("other")
    misc.add_argument("--front-end", choices=("loom", "comfyui"), default="loom",
                      help="the browser app served at /: Loom's own editor, or 'comfyui' for "
                           "ComfyUI's official front end, which you install yourself: "
                           ".venv/bin/pip install comfyui-frontend-package==1.58.1 (GPL-3.0; "
                           "not part of Loom)")
    misc.add_argument("--log-level", default="INFO",
                      choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help="log verbosity")
    misc.add_argument("--quick-test-for-ci", action="store_true",
                      help="start, check that the server answers and the built-in packs loaded, "
                           "then exit (0 when all is well)")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    folders = Folders.under(args.base_dir, models_dir=args.models_dir, input_dir=args.input_dir,
                            output_dir=args.output_dir, temp_dir=args.temp_dir,
                            user_dir=args.user_dir)
    settings = Settings(
        listen=args.listen, port=args.port, auth_token=args.auth_token, auth_user=args.auth_user,
        insecure_no_auth=args.allow_unauthenticated_network_access,
        allowed_origins=list(args.allowed_origin), folders=folders,
        disable_custom_nodes=args.disable_custom_nodes, workers=args.workers,
        cache_max_entries=args.cache_max_entries, cache_max_ram_mb=args.cache_max_ram_mb,
        cache_max_model_ram_mb=args.cache_max_model_ram_mb,
        max_upload_mb=args.max_upload_mb, request_timeout_s=args.request_timeout,
        max_image_megapixels=args.max_image_megapixels,
        max_prompt_memory_mb=args.max_prompt_memory_mb,
        history_max_items=args.history_max_items, cpu=args.cpu, vram=args.vram,
        reserve_vram_gb=args.reserve_vram,
        reset_damaged_db=args.reset_damaged_db,
        preview_method=args.preview_method, disable_metadata=args.disable_metadata,
        log_level=args.log_level, front_end=args.front_end)
    if args.custom_nodes_dir is not None:
        settings.custom_nodes_dir = args.custom_nodes_dir.resolve()
    if args.builtin_nodes_dir is not None:
        settings.builtin_nodes_dir = args.builtin_nodes_dir.resolve()
    return settings


async def serve(settings: Settings, quick_test: bool = False) -> int:
    from aiohttp import web

    from loom.server.app import create_app, make_runner
    from loom.server.security.origins import listen_addresses
    from loom.server.state import STATE

    app = create_app(settings)
    runner = make_runner(app, access_log=None)
    await runner.setup()
    hosts = listen_addresses(settings.listen)
    for host in hosts:
        await web.TCPSite(runner, host, settings.port).start()
    f = settings.folders
    log.info("Folders: models %s | input %s | output %s | user %s", f.models_dir, f.input_dir,
             f.output_dir, f.user_dir)
    for host in hosts:
        shown = f"[{host}]" if ":" in host else host
        log.info("Loom is listening on http://%s:%d", shown, settings.port)
    try:
        if quick_test:
            return await _quick_test(app[STATE], hosts[0], settings.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # Windows: Ctrl+C still interrupts
                pass
        await stop.wait()
        log.info("Stopping: a running prompt stays queued and runs again at the next start")
        return 0
    finally:
        await runner.cleanup()


async def _quick_test(state, host: str, port: int) -> int:
    import aiohttp

    failed = [p.name for p in state.registry.packs.values() if p.error and p.builtin]
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    headers, auth = {}, None
    if state.settings.auth_token:
        headers["Authorization"] = f"Bearer {state.settings.auth_token}"
    elif state.settings.auth_user:
        user, _, password = state.settings.auth_user.partition(":")
        auth = aiohttp.BasicAuth(user, password)
    async with aiohttp.ClientSession(headers=headers, auth=auth) as session:
        async with session.get(f"http://{host}:{port}/object_info") as r:
            ok = r.status == 200 and isinstance(await r.json(), dict)
    if failed:
        log.error("Quick test: built-in packs failed to load: %s", ", ".join(failed))
    log.info("Quick test: %s", "OK" if ok and not failed else "FAILED")
    return 0 if ok and not failed else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from_args(args)
    try:
        return asyncio.run(serve(settings, quick_test=args.quick_test_for_ci))
    except KeyboardInterrupt:
        log.info("Stopped")
        return 0
    except (OSError, RuntimeError) as e:  # port taken, user folder in use by another server
        log.error("Could not start the server: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
