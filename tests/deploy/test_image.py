"""The image, built and run for real (issue 21): the README's compose commands replayed with their
`docker run` equivalents (this machine has Docker but not Compose; `docker_harness.run_args`
turns each `compose.yaml` service into the arguments Compose would use).

- build from a copy of the checkout holding a `.env` (and a database, a token cache, a model, a
  run notebook) with marker values: no marker in `docker history` or in any layer of `docker save`;
- `stockstock run` in the image as the non-root user, `data/ models/ outputs/` mounted from a
  temporary project folder: the run's notebook and report land in the host's `outputs/`;
- the daemon against the loopback fake Bot API (`--network host`): `/ping`, `/status`, the README's
  `exec ... stockstock runs` and backup; `docker stop` during a run: exit 0 within the grace
  period, the run finished and recorded, its kernel shut down (its connection file removed);
- the JupyterLab service: answers on 127.0.0.1 with the token, refuses without it, is published
  on 127.0.0.1 only, and cannot write to `outputs/` (mounted read-only).

Without a Docker engine every test here is skipped with one line saying why."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import report_lines
from docker_harness import (REPO, Timings, base_image, build_context, compose_service, docker,
                            engine_problem, image_uid, run_args)

from stockstock.testing.telegram import DEFAULT_TOKEN, FakeTelegram

pytestmark = [pytest.mark.docker, pytest.mark.slow]
if (_problem := engine_problem()) is not None:        # one line in the report, not one a test
    pytest.skip(f"image test skipped: {_problem}", allow_module_level=True)

MARKER = f"SECRET-MARKER-{uuid.uuid4().hex}"        # must reach no layer
CONTROL = f"CONTROL-MARKER-{uuid.uuid4().hex}"      # must: proves the scan sees file contents
PLANTED = {                                         # a user's checkout: secrets and state
    ".env": f"KIS_APP_KEY={MARKER}\nKIS_APP_SECRET={MARKER}\nTELEGRAM_BOT_TOKEN={MARKER}\n"
            f"JUPYTER_TOKEN={MARKER}\n",
    ".env.local": f"KIS_APP_SECRET={MARKER}\n",
    "data/stockstock.db": MARKER, "data/token_real.json": json.dumps({"token": MARKER}),
    "data/logs/stockstock.jsonl": MARKER, "models/lgbm.txt": MARKER,
    "outputs/2011-03-16/1530_sim_x.ipynb": MARKER, "nbs/_control_marker.txt": CONTROL}
CHAT = 4242
TIMINGS = Timings()


@pytest.fixture(scope="module", autouse=True)
def _timings(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report_lines(request, TIMINGS.lines("image test (seconds per step)"))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    "The project's image, built on python:3.11-slim or its stand-in from a planted checkout."
    base, how = base_image(TIMINGS)
    if base is None: pytest.skip(f"image test skipped: no base image: {how}")
    context = build_context(tmp_path_factory.mktemp("context"), PLANTED)
    tag = f"stockstock-test:{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    docker("build", "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"UID={image_uid()}",
           "-t", tag, str(context), timeout=600, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    TIMINGS.step("build", started)
    print(f"base image: {base} ({how})")
    yield tag
    docker("rmi", "-f", tag, check=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    "The README's server layout: compose.yaml, scheduled/, .env, and data/ models/ outputs/."
    root = tmp_path_factory.mktemp("server")
    shutil.copy(REPO / "compose.yaml", root)
    shutil.copytree(REPO / "scheduled", root / "scheduled")
    (root / ".env").write_text(f"JUPYTER_TOKEN={uuid.uuid4().hex}\n")
    for d in ("data", "models", "outputs", "nbs"):   # `mkdir -p data models outputs`, yours
        (root / d).mkdir()
        os.chown(root / d, image_uid(), image_uid())
    return root


@pytest.fixture(scope="module")
def first_run(image: str, project: Path) -> subprocess.CompletedProcess:
    "`docker compose run --rm stockstock stockstock run` (seed, train, one sim run)."
    args = run_args(compose_service(project, "stockstock"), project, image, detach=False,
                    command=["stockstock", "run"])
    started = time.monotonic()
    r = docker(*args, check=False, timeout=300)
    TIMINGS.step("stockstock run", started)
    return r


def _query(project: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(project / "data/stockstock.db")
    try: return con.execute(sql).fetchall()
    finally: con.close()


def _layers(saved: Path) -> Iterator[tuple[str, str, bytes]]:
    "(layer, path, content) of every file in every layer of a `docker save` archive."
    with tarfile.open(saved) as outer:
        for member in outer:
            if not member.isfile(): continue
            f = outer.extractfile(member)
            if not member.name.endswith("layer.tar"):
                yield "(image metadata)", member.name, f.read()
                continue
            with tarfile.open(fileobj=f, mode="r|") as layer:
                for inner in layer:
                    data = layer.extractfile(inner).read() if inner.isfile() else b""
                    yield member.name, inner.name, data


def test_no_secret_in_the_image(image: str, tmp_path: Path):
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert MARKER not in history
    started = time.monotonic()
    saved = tmp_path / "image.tar"
    docker("save", "-o", str(saved), image, timeout=300)
    found, control, names = [], [], []
    for layer, path, data in _layers(saved):
        names.append(path)
        if MARKER.encode() in data or MARKER in path: found.append(f"{layer}: {path}")
        if CONTROL.encode() in data: control.append(path)
    TIMINGS.step("secret scan", started)
    assert not found, found
    assert control == ["app/nbs/_control_marker.txt"], control     # the scan reads contents
    planted = {f"app/{p}" for p in PLANTED if p != "nbs/_control_marker.txt"}
    assert not planted & set(names), planted & set(names)
    assert "app/.env.example" in names and "app/stockstock/cli.py" in names


def test_stockstock_run_as_the_non_root_user(first_run: subprocess.CompletedProcess,
                                             project: Path):
    assert first_run.returncode == 0, first_run.stdout + first_run.stderr
    assert "run " in first_run.stdout and ": ok" in first_run.stdout, first_run.stdout
    runs = _query(project, "SELECT run_id, status, notebook_path FROM runs")
    assert len(runs) == 1 and runs[0][1] == "ok", runs
    notebook = project / runs[0][2]
    assert notebook.is_file() and notebook.with_suffix(".html").is_file(), notebook
    assert (project / "outputs/index.html").is_file()
    assert notebook.stat().st_uid == image_uid() != 0         # written by the image's user
    assert (project / "models/lgbm.txt").stat().st_uid == image_uid()
    assert json.loads(notebook.read_text())["metadata"]["stockstock"]["run_id"] == runs[0][0]


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram(DEFAULT_TOKEN) as fake:
        yield fake


def _wait(predicate, timeout: float, what: str, logs) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate(): return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s; container log:\n{logs()[-4000:]}")


def _kernel_files(folder: Path) -> list[Path]:
    "Kernel connection files (JSON with a `shell_port`) in `folder`."
    found = []
    for p in folder.glob("*.json"):
        try:
            if "shell_port" in json.loads(p.read_text()): found.append(p)
        except (OSError, ValueError):
            pass                                   # being written or removed right now
    return found


def _ask(tg: FakeTelegram, command: str, logs) -> str:
    before = len(tg.sent_to(CHAT))
    tg.push_message(CHAT, command)
    _wait(lambda: len(tg.sent_to(CHAT)) > before, 30, f"no answer to {command}", logs)
    return tg.sent_to(CHAT)[before].text


def test_daemon_answers_and_stops_cleanly(first_run, image: str, project: Path, tg):
    assert first_run.returncode == 0, "needs the trained project of the run above"
    (project / ".env").write_text((project / ".env").read_text() + (
        f"TELEGRAM_BOT_TOKEN={tg.token}\nTELEGRAM_CHAT_IDS={CHAT}\nTELEGRAM_API_URL={tg.url}\n"))
    # each run's kernel has a connection file (in TMPDIR) while it lives; a clean shutdown
    # removes it: a mounted TMPDIR shows whether the kernel of the run in progress was shut down
    tmp = project / "data/tmp"
    tmp.mkdir()
    os.chown(tmp, image_uid(), image_uid())
    name = f"stockstock-daemon-{uuid.uuid4().hex[:8]}"
    service = compose_service(project, "stockstock")
    command = [*service["command"], "--interval-seconds", "2"]   # sim: a run every 2 s
    args = run_args(service, project, image, detach=True, name=name, command=command,
                    host_network=True, env={"TMPDIR": "/app/data/tmp"})
    started = time.monotonic()
    docker(*args)                                               # `docker compose up -d`
    logs = lambda: docker("logs", name, check=False).stdout + docker(   # noqa: E731
        "logs", name, check=False).stderr
    try:
        assert _ask(tg, "/ping", logs) == "pong"
        status = _ask(tg, "/status", logs)
        assert "Last run: <code>2011" in status, status
        _wait(lambda: logs().count("scheduled_run_finished") >= 1, 90, "no scheduled run", logs)
        runs = docker("exec", name, "stockstock", "runs").stdout          # README: exec ... runs
        assert runs.count("sim") >= 2, runs
        docker("exec", name, "python", "-c", "import sqlite3; sqlite3.connect("   # README: backup
               "'data/stockstock.db').backup(sqlite3.connect('data/backup.db'))")
        assert len(_query(project, "SELECT * FROM runs")) >= 2
        # stop while a run is in progress: its kernel is alive (a connection file exists)
        _wait(lambda: logs().count("scheduled_run_started") > logs().count(
            "scheduled_run_finished") and _kernel_files(tmp), 90,
            "no run in progress with a live kernel", logs)
        stop_started = time.monotonic()
        docker("stop", name, timeout=180)                # compose's stop_grace_period (16 m)
        stop_s = time.monotonic() - stop_started
    finally:
        TIMINGS.step("daemon container", started)
        log = logs()
        state = json.loads(docker("inspect", name, check=False).stdout or "[{}]")[0].get("State")
        docker("rm", "-f", name, check=False)
    assert state["ExitCode"] == 0 and not state["OOMKilled"], (state, log[-4000:])
    assert "daemon_stopping" in log and "run_in_progress=True" in log.split("daemon_stopping")[1]
    assert "daemon_stopped" in log, log[-4000:]
    assert stop_s < 120, stop_s                    # it waited for the run, not for a SIGKILL
    statuses = [s for s, in _query(project, "SELECT status FROM runs")]
    assert "running" not in statuses and statuses.count("ok") >= 3, statuses
    assert not _kernel_files(tmp), _kernel_files(tmp)                  # its kernel shut down
    assert tg.token not in log and DEFAULT_TOKEN not in log


def _get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token: request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r: return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError):
        return 0                                      # not listening (yet)


def _put(url: str, token: str, body: dict) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT",
                                     headers={"Authorization": f"token {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as r: return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_service_needs_the_token_and_only_reads_outputs(first_run, image: str,
                                                                   project: Path):
    assert first_run.returncode == 0, "needs the run notebook of the run above"
    token = compose_service(project, "jupyter")["environment"]["JUPYTER_TOKEN"]
    name, port = f"stockstock-lab-{uuid.uuid4().hex[:8]}", _free_port()
    args = run_args(compose_service(project, "jupyter"), project, image, detach=True, name=name,
                    host_ports={8888: port})
    started = time.monotonic()
    docker(*args)
    logs = lambda: docker("logs", name, check=False).stderr   # noqa: E731
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _get(f"{base}/api/status", token) == 200, 90, "JupyterLab not up", logs)
        TIMINGS.step("jupyterlab up", started)
        assert _get(f"{base}/api/status?token={token}") == 200
        assert _get(f"{base}/lab", token) == 200
        for url, tok in ((f"{base}/api/contents", None), (f"{base}/api/contents", "wrong"),
                         (f"{base}/api/status", None)):
            assert _get(url, tok) == 403, url
        bound = docker("port", name, "8888/tcp").stdout.split()
        assert bound == [f"127.0.0.1:{port}"], bound                  # never a public interface
        notebook = next((project / "outputs").glob("*/*.ipynb"))
        rel = notebook.relative_to(project).as_posix()
        before = notebook.read_bytes()
        model = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"{base}/api/contents/{rel}", headers={"Authorization": f"token {token}"})).read())
        assert model["writable"] is False, model["writable"]
        saved = _put(f"{base}/api/contents/{rel}", token,
                     {"type": "notebook", "format": "json", "content": model["content"]})
        new = _put(f"{base}/api/contents/outputs/new.txt", token,
                   {"type": "file", "format": "text", "content": "x"})
        assert saved >= 400 and new >= 400, (saved, new)          # read-only mount
        assert notebook.read_bytes() == before and not (project / "outputs/new.txt").exists()
        nbs = _put(f"{base}/api/contents/nbs/scratch.txt", token,
                   {"type": "file", "format": "text", "content": "research"})
        assert nbs in (200, 201) and (project / "nbs/scratch.txt").read_text() == "research"
    finally:
        TIMINGS.step("jupyterlab container", started)
        docker("rm", "-f", name, check=False)
