"""Where the offline assets live: `$CALM_ASSETS`, else `../shared/assets` beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def assets_dir() -> Path:
    """The assets folder; it may not exist (then models and data come from their public homes)."""
    env = os.environ.get("CALM_ASSETS")
    return Path(env).expanduser().resolve() if env else (REPO_ROOT.parent / "shared" / "assets").resolve()
