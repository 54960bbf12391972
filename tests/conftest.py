"""Shared fixtures: every test gets its own project home, so no test touches data/ or outputs/."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    "A fresh, empty project home (STOCKSTOCK_HOME) for one test."
    monkeypatch.setenv("STOCKSTOCK_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("KIS_", "TELEGRAM_")):
            monkeypatch.delenv(name)
    return tmp_path


def stockstock(*args: str, home: Path, env: dict | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    "Run the installed `stockstock` console script in `home` (a real subprocess)."
    full_env = {**os.environ, "STOCKSTOCK_HOME": str(home), **(env or {})}
    return subprocess.run([str(BIN / "stockstock"), *args], cwd=home, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
