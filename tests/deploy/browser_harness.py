"""What the browser tests share: Debian's Chromium driven by Playwright (never `playwright
install`, which downloads browsers), a watch on every page (console errors, requests that would
leave 127.0.0.1 / file://, one screenshot per page for the failure message), a JupyterLab started
on 127.0.0.1 with a token, and a sim project with a few runs and a backtest."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# without the background-networking flags Chromium keeps calling home, and on a closed network
# its refused connections flood the log; a fresh profile (user-data dir) per browser
FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOCAL = ("file://", "http://127.0.0.1", "data:", "blob:", "about:")
BIN = Path(sys.executable).parent


def browser_problem() -> str | None:
    "Why the browser tests cannot run here (one line), or None."
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not Path(CHROMIUM).exists(): return f"no {CHROMIUM} (apt-get install chromium)"
    return None


@dataclass
class Watch:
    "What the pages of one browser context did: console errors, outside requests, screenshots."
    folder: Path
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)

    def attach(self, context) -> None:
        def route(r):
            if r.request.url.startswith(LOCAL): r.continue_()
            else:
                self.outside.append(r.request.url)
                r.abort()
        context.route("**/*", route)
        context.on("page", self._page)

    def _page(self, page) -> None:
        page.on("console", lambda m: m.type == "error" and self.errors.append(
            f"{page.url.rsplit('/', 1)[-1][:60]}: {m.text[:300]}"))
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def shot(self, page, name: str) -> Path:
        path = self.folder / f"{len(self.shots):02d}_{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        return path

    @contextlib.contextmanager
    def failing_with_screenshots(self) -> Iterator[None]:
        "Re-raise an assertion with the paths of the screenshots taken so far."
        try:
            yield
        except AssertionError as e:
            names = "\n  ".join(map(str, self.shots)) or "(none)"
            raise AssertionError(f"{e}\nscreenshots:\n  {names}") from e


@contextlib.contextmanager
def chromium(folder: Path) -> Iterator[tuple[object, Watch]]:
    "A Chromium browser context (fresh profile under `folder`) and its `Watch`."
    if problem := browser_problem(): pytest.skip(f"browser test skipped: {problem}")
    from playwright.sync_api import sync_playwright
    folder.mkdir(parents=True, exist_ok=True)
    watch = Watch(folder)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(folder / "profile"), executable_path=CHROMIUM, args=FLAGS, headless=True,
            viewport={"width": 1280, "height": 900})
        watch.attach(context)
        try:
            yield context, watch
        finally:
            context.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    "A JupyterLab server started for a test."
    url: str
    token: str
    root: Path
    runtime: Path
    log: Path

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.url}/api/{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            text = r.read()
        return json.loads(text) if text else {}


@contextlib.contextmanager
def jupyterlab(root: Path, state: Path, autosave_s: int = 1) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 with a token, serving `root` (as STOCKSTOCK_HOME): its settings,
    workspaces and runtime files under `state`, autosave every `autosave_s` seconds (so a change
    made by merely opening a file reaches the disk within the test), no news or update checks."""
    settings = state / "settings/@jupyterlab/docmanager-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "plugin.jupyterlab-settings").write_text(
        json.dumps({"autosave": True, "autosaveInterval": autosave_s}))
    token, port = uuid.uuid4().hex, free_port()
    env = {**os.environ, "JUPYTER_TOKEN": token, "STOCKSTOCK_HOME": str(root),
           "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
           "JUPYTER_CONFIG_DIR": str(state / "config"), "NO_PROXY": "127.0.0.1,localhost"}
    args = [str(BIN / "jupyter-lab"), "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly"]
    if os.geteuid() == 0: args.append("--allow-root")                  # CI runs as root
    log = state / "jupyterlab.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    lab = Lab(f"http://127.0.0.1:{port}", token, root, state / "runtime", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                lab.api("GET", "status")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, f"JupyterLab exited:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"JupyterLab not up:\n{log.read_text()}"
                time.sleep(0.3)
        yield lab
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def stockstock(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([str(BIN / "stockstock"), *args], cwd=home, capture_output=True,
                       text=True, timeout=timeout, env={**os.environ, "STOCKSTOCK_HOME": str(home)})
    assert r.returncode in (0, 1), f"stockstock {' '.join(args)}: {r.returncode}\n{r.stderr}"
    return r


_PROJECTS: dict[Path, Path] = {}
BUILT_IN: dict[str, float] = {}        # seconds the sim project took to build


def sim_project(trading_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project home (built once per session) with three sim runs that trade, one failed run,
    a backtest report, the shipped template in `scheduled/`, and a fresh `outputs/index.html`."""
    if trading_template in _PROJECTS: return _PROJECTS[trading_template]
    from conftest import REPO, template_with
    started = time.monotonic()
    home = tmp_path_factory.mktemp("sim_project")
    shutil.copytree(trading_template, home, dirs_exist_ok=True)
    for _ in range(3):
        r = stockstock(home, "trade", "--params", "scheduled/test.yaml")
        assert r.returncode == 0, r.stdout + r.stderr
    template_with(home, "open_run", "raise RuntimeError('a failure for the dashboard')")
    assert stockstock(home, "trade", "--params", "scheduled/test.yaml").returncode == 1
    shutil.copy(REPO / "scheduled/hourly_trade.ipynb", home / "scheduled/hourly_trade.ipynb")
    r = stockstock(home, "backtest", "--params", "scheduled/test.yaml", "--start", "2011-03-01",
                   "--end", "2011-06-30", "--retrain-every", "60", "--max-rounds", "20",
                   "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    stockstock(home, "runs")                              # rewrites outputs/index.html
    _PROJECTS[trading_template] = home
    BUILT_IN["sim project"] = time.monotonic() - started
    return home
