"""The deployment files, read as text (no Docker engine needed): the image runs as a non-root user,
installs like the README, keeps state in volumes and secrets out; compose binds JupyterLab to
127.0.0.1 with a required token and gives the daemon its secrets at run time only."""
from __future__ import annotations

import fnmatch
import re

import yaml
from conftest import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
STATE = ("data", "models", "outputs")


def _instructions() -> list[tuple[str, str]]:
    "(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."
    text = re.sub(r"\\\n", " ", "\n".join(x for x in DOCKERFILE.splitlines()
                                          if not x.lstrip().startswith("#")))
    return [(x.split(None, 1)[0].upper(), x.split(None, 1)[1]) for x in text.splitlines()
            if x.strip()]


def _ignored(path: str, patterns: list[str]) -> bool:
    "Roughly Docker's rule: the last matching pattern wins, `!` re-includes."
    ignored = False
    for p in patterns:
        negate, p = p.startswith("!"), p.lstrip("!").rstrip("/")
        p = p.removeprefix("**/")
        parts = path.split("/")
        hit = any(fnmatch.fnmatch("/".join(parts[:i]), p) or fnmatch.fnmatch(parts[i - 1], p)
                  for i in range(1, len(parts) + 1))
        if hit: ignored = not negate
    return ignored


def test_dockerfile_installs_like_the_readme_as_a_non_root_user():
    steps = _instructions()
    # python:3.11-slim unless a build argument names a stand-in (tests/deploy, no registry here)
    assert steps[:2] == [("ARG", "BASE_IMAGE=python:3.11-slim"), ("FROM", "${BASE_IMAGE}")]
    names = [n for n, _ in steps]
    users = [a for n, a in steps if n == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    assert names.index("USER") > names.index("COPY")              # files copied, then dropped
    assert any(n == "RUN" and "chown stockstock:stockstock /app" in a for n, a in steps)  # venv
    assert all(names.index("USER") < i for i, n in enumerate(names) if n == "RUN" and
               "pip install" in steps[i][1])                     # pip runs as that user
    install = next(a for n, a in steps if n == "RUN" and "pip install" in a)
    readme = (REPO / "README.md").read_text()
    assert 'pip install -e ".[dev]"' in readme and '-e ".[dev]"' in install
    assert "libgomp1" in install or any("libgomp1" in a for _, a in steps)   # LightGBM needs it
    volumes = next(a for n, a in steps if n == "VOLUME")
    assert set(yaml.safe_load(volumes)) == {f"/app/{d}" for d in STATE}
    assert dict(steps)["CMD"] == '["python", "-m", "stockstock"]'
    for name, args in steps:                                      # no secret copied or set
        if name in ("COPY", "ADD", "ENV", "ARG"):
            assert ".env" not in args and not re.search(r"(TOKEN|SECRET|KEY|ACCOUNT)=", args), args


def test_dockerignore_keeps_secrets_and_state_out():
    patterns = [x.strip() for x in (REPO / ".dockerignore").read_text().splitlines()
                if x.strip() and not x.startswith("#")]
    for path in (".env", ".env.local", "data/stockstock.db", "data/logs/stockstock.jsonl",
                 "models/lgbm.txt", "outputs/2011-03-16/1530_sim_x.ipynb", ".venv/bin/python",
                 "nbs/__pycache__/x.pyc", "data/token_real.json"):
        assert _ignored(path, patterns), path
    for path in (".env.example", "nbs/14b_telegram.ipynb", "stockstock/daemon.py",
                 "scheduled/hourly_trade.ipynb", "settings.ini", "setup.py", "README.md"):
        assert not _ignored(path, patterns), path


def test_compose_runs_the_daemon_and_a_local_only_jupyterlab():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"stockstock", "jupyter"}
    daemon, lab = services["stockstock"], services["jupyter"]
    assert daemon["command"][:3] == ["python", "-m", "stockstock"]
    assert daemon["env_file"] == ".env" and "environment" not in daemon   # secrets at run time
    assert daemon["restart"] == "unless-stopped"
    grace = re.fullmatch(r"(\d+)m", daemon["stop_grace_period"])
    assert grace and int(grace.group(1)) * 60 > 900           # > the daemon's run timeout
    for service in (daemon, lab):
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        assert {mounts[f"/app/{d}"] for d in STATE} == {f"./{d}" for d in STATE}
    # JupyterLab only reads the audit trail (issue 18): opening a run notebook never writes it
    assert "./outputs:/app/outputs:ro" in lab["volumes"]
    assert "./outputs:/app/outputs" in daemon["volumes"]
    assert lab["ports"] == ["127.0.0.1:8888:8888"]            # never on a public interface
    assert "--ip=0.0.0.0" in lab["command"]                   # (inside the container only)
    assert re.fullmatch(r"\$\{JUPYTER_TOKEN:\?.+\}", lab["environment"]["JUPYTER_TOKEN"])
    assert "env_file" not in lab                              # research needs no trading keys
    assert not any("token" in a.lower() for a in lab["command"])  # not visible in `ps`
    example = (REPO / ".env.example").read_text()
    assert re.search(r"^JUPYTER_TOKEN=$", example, re.M)
    assert re.search(r"^STOCKSTOCK_PARAMS=scheduled/sim.yaml$", example, re.M)


def test_readme_documents_the_server():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Deploying on a small always-on server", 1)[1].split("\n## ", 1)[0]
    for words in ("docker compose up -d", "docker compose logs", "stockstock seed",
                  "stockstock train", "git pull", ".backup", "ssh -L 8888:127.0.0.1:8888"):
        assert words in section, words
    commands = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    for name in ("serve", "bot", "notify", "status", "halt", "resume"):
        assert f"`stockstock {name}" in commands, name
    assert "python -m stockstock" in readme
