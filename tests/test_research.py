"""The research notebooks, executed as a person would (nbconvert, a real kernel, the embedded
data) and rendered to HTML in `outputs/research/`: every chart must be in the HTML, drawable
offline from the one `outputs/plotly.min.js` every report shares (not 3.5 MB of plotly.js inside
each page), and nothing fetched from the internet.

They run here rather than under `nbdev_test` (`nbs/research/.notest`): one execution gives both
the check that they run and the HTML to inspect."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from conftest import REPO

RESEARCH = sorted((REPO / "nbs/research").glob("*.ipynb"))
PLOTLY_JSON = "application/vnd.plotly.v1+json"


@pytest.mark.slow
@pytest.mark.parametrize("notebook", RESEARCH, ids=[p.stem for p in RESEARCH])
def test_research_notebook_renders_every_chart_in_its_html(notebook: Path, tmp_path: Path,
                                                           monkeypatch):
    from nbclient import NotebookClient

    from stockstock.runs import ensure_plotly_js, run_exporter
    monkeypatch.setenv("STOCKSTOCK_HOME", str(tmp_path))        # logs and any files go there
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if PLOTLY_JSON in o.get("data", {})]
    assert figures, f"{notebook.name} shows no chart"
    for out in figures:                     # each chart also carries its offline HTML rendering
        assert "text/html" in out["data"] and "Plotly.newPlot" in out["data"]["text/html"]
    html, _ = run_exporter().from_notebook_node(nb)
    outputs = tmp_path / "outputs"
    (outputs / "research").mkdir(parents=True)
    (outputs / f"research/{notebook.stem}.html").write_text(html)
    ensure_plotly_js(outputs)
    assert html.count("Plotly.newPlot") >= len(figures)
    # offline: every chart loads the shared ../plotly.min.js; plotly.js is not inside the page
    assert html.count('src="../plotly.min.js"') >= len(figures)
    assert not re.findall(r"plotly\.js v\d+\.\d+\.\d+", html)
    assert len(html.encode()) < (outputs / "plotly.min.js").stat().st_size, len(html.encode())
    assert not re.search(r"""src=["']https?://""", html)           # nothing from the internet
    print(f"\n{notebook.stem}.html: {len(html.encode()):,} bytes, {len(figures)} charts")
