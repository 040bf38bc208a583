"""The package type-checks under ``mypy --strict`` (its ``py.typed`` promise)."""

from __future__ import annotations

from pathlib import Path

from mypy import api


def test_mypy_strict() -> None:
    root = Path(__file__).resolve().parents[1]
    cache = root.parents[1] / "target" / "mypy-cache"
    config = str(root / "pyproject.toml")
    out, err, status = api.run(["--config-file", config, "--cache-dir", str(cache), str(root / "src" / "ssehub")])
    assert status == 0, out + err
