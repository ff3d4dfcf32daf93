"""Settings of one Loom server, filled from the command line (see ``main.py --help``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from loom.paths import Folders

REPO_ROOT = Path(__file__).resolve().parent.parent
# --vram choices (loom.runtime.vram.VramMode, and "auto"); here so the CLI needs no torch.
VRAM_CHOICES = ("auto", "high", "normal", "low", "none", "cpu")


@dataclass
class Settings:
    listen: str = "127.0.0.1"
    port: int = 8188
    # Authentication: "token" (a bearer token) and/or "user:password" (HTTP basic).
    auth_token: str | None = None
    auth_user: str | None = None  # "user:password"
    # Listening beyond loopback without auth is refused unless this is set.
    insecure_no_auth: bool = False
    # Extra origins allowed to make state-changing requests (e.g. a reverse proxy's).
    allowed_origins: list[str] = field(default_factory=list)
    folders: Folders = field(default_factory=lambda: Folders.under(REPO_ROOT))
    custom_nodes_dir: Path = REPO_ROOT / "custom_nodes"
    builtin_nodes_dir: Path = REPO_ROOT / "nodes"
    web_dir: Path = REPO_ROOT / "web" / "dist"
    # The app served at /: "loom" (the editor in web_dir) or "comfyui" (ComfyUI's front end,
    # from the comfyui-frontend-package the user installed).
    front_end: str = "loom"
    # Workflow templates served at /templates (index.json, NAME.json, input/ samples).
    templates_dir: Path = REPO_ROOT / "workflow_templates"
    disable_custom_nodes: bool = False
    workers: int = 1
    cache_max_entries: int = 10_000
    cache_max_ram_mb: int = 4096
    # Model weights the output cache may keep alive (None: half of this machine's RAM).
    cache_max_model_ram_mb: int | None = None
    max_upload_mb: int = 100
    # A request whose headers or body stop arriving for this long is closed (slow clients,
    # half-sent requests); also how long an idle keep-alive connection stays open.
    request_timeout_s: float = 30.0
    # The pixel budget of one image file's decode (width × height × frames), for uploads and
    # LoadImage: a small file must not expand into gigabytes.
    max_image_megapixels: float = 70.0
    # Save images and latents without the prompt and workflow in their metadata (ComfyUI's flag).
    disable_metadata: bool = False
    # What one prompt's outputs may hold, from the nodes' estimates checked at validation (an
    # EmptyImage of 16384² × 4096 is refused before it allocates). None: half of the RAM.
    max_prompt_memory_mb: int | None = None
    history_max_items: int = 10_000
    # A damaged or foreign user/loom.sqlite3 is set aside (renamed) and a fresh one started,
    # rather than refusing to start.
    reset_damaged_db: bool = False
    cpu: bool = False  # force CPU even when a GPU is present
    # Model placement (loom.runtime.vram): auto | high | normal | low | none | cpu.
    vram: str = "auto"
    reserve_vram_gb: float | None = None  # None: loom.runtime.vram.DEFAULT_RESERVE_BYTES
    # Step previews for the clients that ask for them: latent2rgb | none (see server/previews.py).
    preview_method: str = "latent2rgb"
    log_level: str = "INFO"

    @property
    def database_path(self) -> Path:
        return self.folders.user_dir / "loom.sqlite3"
