"""JupyterLab, the documented way to browse the audit trail, only reads it (issue 18 item 3,
issue 21): a real JupyterLab on 127.0.0.1 with a token, autosaving every second, serving a sim
project with executed runs.

- Through the contents API, with what JupyterLab's document model does on opening and saving
  (the kernelspec of the kernel it starts and that kernel's `language_info` set into the
  notebook's metadata, then a save): the template and a run notebook stay byte-identical. The
  same steps do rewrite a notebook that carries a bare `python3` kernelspec (the old template), so
  the check can fail.
- In Chromium: opening the template and a run notebook changes neither (`runs --verify` clean),
  while the old template, opened the same way, is rewritten by autosave; "Run All" on a scratch
  copy of the template records a new run marked `manual:jupyterlab` and stops with one sentence
  naming it (issue 18 item 1)."""
from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from browser_harness import Lab, chromium, jupyterlab, sim_project, stockstock
from conftest import REPO, report_lines

pytestmark = pytest.mark.slow
TEMPLATE = "scheduled/hourly_trade.ipynb"
LEGACY = "scheduled/legacy_kernelspec.ipynb"      # the template as it was before issue 18
SEEN: list[str] = []


@pytest.fixture(scope="module")
def home(trading_template: Path, tmp_path_factory: pytest.TempPathFactory,
         request: pytest.FixtureRequest) -> Iterator[Path]:
    "A copy of the sim project (runs, a backtest) plus the old template as a control."
    root = tmp_path_factory.mktemp("lab_home")
    shutil.copytree(sim_project(trading_template, tmp_path_factory), root, dirs_exist_ok=True)
    nb = nbformat.read(REPO / TEMPLATE, as_version=4)
    nb.metadata = {"kernelspec": {"display_name": "python3", "language": "python",
                                  "name": "python3"}}
    nbformat.write(nb, root / LEGACY)
    yield root
    report_lines(request, SEEN)


@pytest.fixture(scope="module")
def lab(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with jupyterlab(home, tmp_path_factory.mktemp("lab_state")) as server:
        yield server


def _run_notebook(home: Path) -> str:
    return next(p for p in sorted((home / "outputs").glob("*/*.ipynb"))).relative_to(
        home).as_posix()


def _changes(home: Path, before: dict[str, bytes]) -> dict[str, str]:
    "The files that changed since `before`, each with the first lines of its diff."
    import difflib
    changed = {}
    for rel, old in before.items():
        new = (home / rel).read_bytes()
        if new != old:
            diff = difflib.unified_diff(old.decode().splitlines(), new.decode().splitlines(),
                                        lineterm="", n=0)
            changed[rel] = "\n".join(list(diff)[2:14])
    return changed


def _session(lab: Lab, rel: str, page, timeout: float = 60) -> dict:
    """The kernel session JupyterLab opened for `rel`, once its kernel is idle. (Waiting through
    the page: Playwright's sync API serves the request router only inside its own calls.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in lab.api("GET", "sessions"):
            if s["path"] == rel and s["kernel"]["execution_state"] == "idle": return s
        page.wait_for_timeout(300)
    raise AssertionError(f"no idle kernel for {rel}: {lab.api('GET', 'sessions')}\n"
                         f"{lab.log.read_text()[-3000:]}")


def _save_as_jupyterlab_does(lab: Lab, rel: str) -> None:
    """Open `rel` the way JupyterLab's document model does: load it, start its kernel, set the
    kernel's spec and `language_info` (from its kernel_info reply) into the metadata, save."""
    from jupyter_client import BlockingKernelClient
    model = lab.api("GET", f"contents/{rel}")
    session = lab.api("POST", "sessions", {"path": rel, "type": "notebook", "name": "",
                                           "kernel": {"name": "python3"}})
    spec = lab.api("GET", "kernelspecs")["kernelspecs"]["python3"]["spec"]
    client = BlockingKernelClient(
        connection_file=str(lab.runtime / f"kernel-{session['kernel']['id']}.json"))
    client.load_connection_file()
    client.start_channels()
    try:
        info = client.kernel_info(reply=True, timeout=60)["content"]["language_info"]
    finally:
        client.stop_channels()
    content = model["content"]
    content["metadata"]["kernelspec"] = {"display_name": spec["display_name"],
                                         "language": spec["language"], "name": "python3"}
    content["metadata"]["language_info"] = info
    lab.api("PUT", f"contents/{rel}", {"type": "notebook", "format": "json", "content": content})
    lab.api("DELETE", f"sessions/{session['id']}")


def test_contents_api_save_leaves_template_and_run_notebook_identical(home: Path, lab: Lab):
    files = [TEMPLATE, _run_notebook(home), LEGACY]
    before = {rel: (home / rel).read_bytes() for rel in files}
    for rel in files: _save_as_jupyterlab_does(lab, rel)
    changed = _changes(home, before)
    assert list(changed) == [LEGACY], changed               # the control shows the check bites
    (home / LEGACY).write_bytes(before[LEGACY])
    verify = stockstock(home, "runs", "--verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.browser
def test_opening_in_jupyterlab_writes_nothing(home: Path, lab: Lab, tmp_path: Path):
    files = [TEMPLATE, _run_notebook(home), LEGACY]
    before = {rel: (home / rel).read_bytes() for rel in files}
    started = time.monotonic()
    with chromium(tmp_path) as (context, watch), watch.failing_with_screenshots():
        for rel in files:
            page = context.new_page()
            page.goto(f"{lab.url}/lab/tree/{rel}?reset&token={lab.token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            watch.shot(page, Path(rel).stem)
            _session(lab, rel, page)
            page.wait_for_timeout(4000)                  # four autosave intervals
            page.close()
        changed = _changes(home, before)
        assert list(changed) == [LEGACY], changed         # autosave was on, and it did save
        verify = stockstock(home, "runs", "--verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert watch.outside == [], watch.outside
        assert watch.errors == [], watch.errors
    SEEN.append(f"JupyterLab: opened the template, a run notebook and the old template in "
                f"{time.monotonic() - started:.0f} s; rewritten: {list(changed)}")


@pytest.mark.browser
def test_run_all_on_a_scratch_copy_of_the_template_completes(home: Path, lab: Lab,
                                                             tmp_path: Path):
    """Issue 18: Run All on the template launches a new run marked manual:jupyterlab (asked to take
    the replay's next session), then stops at its first cell with one sentence naming the run."""
    scratch = "scheduled/scratch_run.ipynb"
    nb = nbformat.read(home / TEMPLATE, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\nadvance_sim_clock = True"
    nbformat.write(nb, home / scratch)
    # the template's defaults trade the five embedded symbols: seed them as the quick start does
    assert stockstock(home, "seed").returncode == 0      # (the test model's home has four)
    started = time.monotonic()
    with chromium(tmp_path) as (context, watch), watch.failing_with_screenshots():
        page = context.new_page()
        page.goto(f"{lab.url}/lab/tree/{scratch}?reset&token={lab.token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        _session(lab, scratch, page)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        busy = """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                        .some(x => x.innerText.includes('*'))"""   # "[*]:" queued or running
        try:          # cells queue, then run one by one; an error unqueues the rest
            page.wait_for_function(busy, timeout=30_000)
            page.wait_for_function(f"() => !({busy})()", timeout=180_000)
        finally:
            watch.shot(page, "run_all")
        _session(lab, scratch, page)
        page.wait_for_timeout(3000)                       # autosave writes the outputs
        nb = json.loads((home / scratch).read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        errors = [(o["ename"], o["evalue"]) for c in code for o in c["outputs"]
                  if o["output_type"] == "error"]
        con = sqlite3.connect(home / "data/stockstock.db")
        (run_id, status, path), = con.execute(
            "SELECT run_id, status, notebook_path FROM runs WHERE origin = 'manual:jupyterlab'")
        con.close()
        assert (status, (home / path).is_file()) == ("ok", True), (status, path)
        assert len(errors) == 1 and errors[0][0] == "RunStop", errors     # then it stopped
        assert errors[0][1].startswith(f"This notebook launched run {run_id} "
                                       "(manual:jupyterlab), which ended ok"), errors
        assert watch.outside == [], watch.outside
    SEEN.append(f"JupyterLab: Run All on a scratch copy of the template recorded run {run_id} "
                f"(manual:jupyterlab) in {time.monotonic() - started:.0f} s")
