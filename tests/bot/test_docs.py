"""The docs stay true: every setting is in .env.example and in the README's configuration table."""

from __future__ import annotations

import re
from pathlib import Path

from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_in_env_example_and_readme() -> None:
    """Each Settings field appears as KEY= (maybe commented out) in .env.example and as `KEY` in the README."""
    env_example = (ROOT / ".env.example").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    keys = [name.upper() for name in Settings.model_fields]
    missing = [
        key
        for key in keys
        if not re.search(rf"^(# )?{key}=", env_example, re.MULTILINE) or f"`{key}`" not in readme
    ]
    assert [] == missing
