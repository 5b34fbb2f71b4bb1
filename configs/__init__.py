"""Suite configurations shipped with the package (`clip4vla smoke` reads smoke.yaml from here)."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).parent


def path(name: str) -> Path:
    """Path of a shipped config, e.g. path("smoke.yaml")."""
    return CONFIG_DIR / name


def suite_names() -> list[str]:
    """The shipped suites by name (`clip4vla sweep paper`): paper, ablations, smoke."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
