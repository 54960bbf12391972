"""Issue 18: viewing never writes. Run notebooks and the template are opened through a real Jupyter
server's contents API and saved back as JupyterLab's document model saves them (the kernelspec and
language_info a running kernel gives JupyterLab): the files stay byte-identical."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import BIN, REPO, query, stockstock

TOKEN = "view-only-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(port: int, path: str, method: str = "GET", body: dict | None = None) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"token {TOKEN}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


@pytest.fixture
def server(trading_home: Path):
    "A real Jupyter server over the project home (loopback, token), as compose runs JupyterLab."
    port = _free_port()
    proc = subprocess.Popen([str(BIN / "jupyter-server"), "--no-browser", "--ip=127.0.0.1",
                             f"--port={port}", f"--ServerApp.root_dir={trading_home}",
                             f"--IdentityProvider.token={TOKEN}", "--allow-root"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "STOCKSTOCK_HOME": str(trading_home)})
    try:
        for _ in range(600):
            assert proc.poll() is None, "the Jupyter server exited"
            try:
                _api(port, "status")
                break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _language_info() -> dict:
    "What a running python3 kernel tells JupyterLab about its language."
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kc.kernel_info()
        return kc.get_shell_msg(timeout=30)["content"]["language_info"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _open_and_save(port: int, path: str, language_info: dict) -> None:
    "Open `path` as JupyterLab does, let its kernel fill the metadata, save it (autosave)."
    model = _api(port, f"contents/{path}?type=notebook&content=1")
    spec = _api(port, "kernelspecs")["kernelspecs"]["python3"]["spec"]
    meta = model["content"]["metadata"]
    meta["kernelspec"] = {"display_name": spec["display_name"], "language": spec["language"],
                          "name": "python3"}
    meta["language_info"] = language_info
    _api(port, f"contents/{path}", "PUT",
         {"type": "notebook", "format": "json", "content": model["content"]})


@pytest.mark.slow
def test_opening_run_notebooks_and_the_template_in_jupyter_changes_no_byte(trading_home, server):
    home = trading_home
    shutil.copy(REPO / "scheduled/hourly_trade.ipynb", home / "scheduled/hourly_trade.ipynb")
    r = stockstock("trade", "--params", "scheduled/test.yaml", home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    (nb_path,), = query(home, "SELECT notebook_path FROM runs")
    paths = [nb_path, "scheduled/hourly_trade.ipynb"]
    before = {p: (home / p).read_bytes() for p in paths}
    info = _language_info()
    for p in paths: _open_and_save(server, p, info)
    changed = [p for p in paths if (home / p).read_bytes() != before[p]]
    assert changed == [], changed
    assert (home / "scheduled/hourly_trade.ipynb").read_bytes() == \
        (REPO / "scheduled/hourly_trade.ipynb").read_bytes()
    ok = stockstock("runs", "--verify", home=home)
    assert ok.returncode == 0, ok.stdout
