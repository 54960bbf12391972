"""The dashboard (`outputs/index.html`) and a run's HTML report in a real browser (Debian's
Chromium through Playwright), opened as files the way a person opens them, after three sim runs
that trade, one failed run and a backtest. Every request that would leave 127.0.0.1 / file:// is
blocked and recorded; console errors are recorded; each page is screenshotted, and the
screenshots' paths are part of every failure message."""
from __future__ import annotations

import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from browser_harness import BUILT_IN, browser_problem, chromium, sim_project
from conftest import report_lines

pytestmark = [pytest.mark.browser, pytest.mark.slow]
if (_problem := browser_problem()) is not None:       # one line in the report, not one a test
    pytest.skip(f"browser test skipped: {_problem}", allow_module_level=True)

ROWS_JS = """() => [...document.querySelectorAll('tr.run')].map(r => ({
  visible: r.offsetParent !== null, status: r.cells[2].innerText.trim(),
  mode: r.closest('table').previousElementSibling.innerText.trim()}))"""
# how many points a plotly line was drawn with: its SVG path `d` ("M x,y L x,y ...")
POINTS_JS = """el => [...el.querySelectorAll('.scatterlayer .trace path.js-line')].map(
  p => (p.getAttribute('d').match(/[ML]/g) || []).length)"""
# what a chart drew: line points, bars and markers (0: a blank chart)
MARKS_JS = f"""el => ({POINTS_JS})(el).reduce((a, b) => a + b, 0)
  + el.querySelectorAll('.barlayer .point path, .scatterlayer .points path').length"""


@pytest.fixture(scope="module", autouse=True)
def _timing(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.monotonic()
    yield
    report_lines(request, [f"dashboard browser tests: {time.monotonic() - started:.0f} s "
                           f"(building the sim project: {BUILT_IN.get('sim project', 0):.0f} s)"])


@pytest.fixture(scope="module")
def project(trading_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sim_project(trading_template, tmp_path_factory)


def _runs(project: Path) -> list[tuple]:
    con = sqlite3.connect(project / "data/stockstock.db")
    try:
        return con.execute("SELECT run_id, status, mode, equity, notebook_path, n_orders "
                           "FROM runs").fetchall()
    finally:
        con.close()


def _local_file(href: str) -> Path | None:
    url = urlparse(href)
    return Path(unquote(url.path)) if url.scheme == "file" else None


def test_dashboard_filters_chart_and_links(project: Path, tmp_path: Path):
    runs = _runs(project)
    with chromium(tmp_path) as (context, watch), watch.failing_with_screenshots():
        page = context.new_page()
        page.goto((project / "outputs/index.html").as_uri())
        page.wait_for_selector("#equity svg.main-svg", timeout=20_000)
        watch.shot(page, "dashboard")
        rows = page.evaluate(ROWS_JS)
        assert len(rows) == len(runs) and all(r["visible"] for r in rows), rows
        assert sorted(r["status"] for r in rows) == sorted(r[1] for r in runs)
        for select, key in (("status", "status"), ("mode", "mode")):
            shown = {}
            values = page.eval_on_selector_all(f"#{select} option", "os => os.map(o => o.value)")
            for value in values:
                page.select_option(f"#{select}", value)
                rows = page.evaluate(ROWS_JS)
                visible = [r for r in rows if r["visible"]]
                assert visible == [r for r in rows if not value or r[key] == value], (select, value)
                shown[value or "all"] = len(visible)
            page.select_option(f"#{select}", "")
            assert len(set(shown.values())) > 1, (select, shown)     # the filter does something
            print(f"filter {select}: rows shown per option {shown}")
        page.select_option("#status", "failed")
        page.select_option("#mode", "sim")
        assert sum(r["visible"] for r in page.evaluate(ROWS_JS)) == 1     # both filters at once
        watch.shot(page, "dashboard_filtered")
        points = page.eval_on_selector("#equity", POINTS_JS)
        assert points == [sum(r[3] is not None for r in runs)], points  # one point per run
        hrefs = page.eval_on_selector_all(         # the page's links (not plotly's logo link)
            "a[href]", "as => as.filter(a => !a.closest('.modebar')).map(a => a.href)")
        files = [_local_file(h) for h in hrefs]
        assert None not in files, hrefs                                  # only local files
        missing = [str(f) for f in files if not f.is_file()]
        assert not missing, missing
        reports = {f for f in files if f.suffix == ".html"}
        assert len(reports) == sum(r[4] is not None for r in runs) + 1, reports  # + backtest
        assert any("backtest" in f.parts for f in reports)
        assert watch.errors == [], watch.errors
        assert watch.outside == [], watch.outside


# the labels of a plotly chart's y axis, as drawn
TICKS_JS = "el => [...el.querySelectorAll('.ytick text')].map(t => t.textContent)"
STUDIES_JS = """() => [...document.querySelectorAll('h2')].filter(h => h.innerText.endsWith(
  'reports')).map(h => ({kind: h.innerText, rows: [...h.nextElementSibling.rows].map(
  r => [...r.cells].map(c => c.innerText.trim()))}))"""


def test_dashboard_equity_axis_in_cents_and_backtests_with_figures(project: Path, tmp_path: Path):
    """Issue 18: the equity axis is labelled in cents at the finest, each label a different
    amount (not 99.999k, 100k, 100.001k); the backtest is listed with its headline figures."""
    with chromium(tmp_path) as (context, watch), watch.failing_with_screenshots():
        page = context.new_page()
        page.goto((project / "outputs/index.html").as_uri())
        page.wait_for_selector("#equity svg.main-svg", timeout=20_000)
        watch.shot(page, "dashboard_axis")
        ticks = page.eval_on_selector("#equity", TICKS_JS)
        assert len(ticks) >= 2 and all(re.fullmatch(r"-?\d{1,3}(,\d{3})*\.\d\d", t)
                                       for t in ticks), ticks
        values = [float(t.replace(",", "")) for t in ticks]
        assert min(b - a for a, b in zip(values, values[1:], strict=False)) >= 0.01, ticks
        studies = page.evaluate(STUDIES_JS)
        print(f"equity axis labels: {ticks}; studies: {studies}")
        (backtests,) = [s["rows"] for s in studies if s["kind"] == "Backtest reports"]
        assert backtests[0][:5] == ["report", "window", "threshold", "return", "buy & hold"]
        row = dict(zip(backtests[0], backtests[1], strict=True))
        assert row["window"] == "2011-03-01 to 2011-06-30", row
        assert re.fullmatch(r"-?\d+\.\d%", row["return"]) and re.fullmatch(r"\d+", row["trades"])
        assert watch.outside == [], watch.outside


@pytest.fixture(scope="module")
def report(project: Path, tmp_path_factory: pytest.TempPathFactory):
    "What the browser shows of the report of the last run that sent orders (and screenshots)."
    run = max((r for r in _runs(project) if r[5]), key=lambda r: r[0])
    html = (project / run[4]).with_suffix(".html")
    alone = tmp_path_factory.mktemp("alone") / html.name     # copied alone, as a person would
    shutil.copy(html, alone)
    seen = {}
    with chromium(tmp_path_factory.mktemp("report_browser")) as (context, watch):
        for where, path in (("in place", html), ("alone", alone)):
            page = context.new_page()
            before = (len(watch.errors), len(watch.outside))
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_timeout(1500)                  # plotly draws after load
            watch.shot(page, f"run_report_{where.replace(' ', '_')}")
            seen[where] = dict(
                plots=page.eval_on_selector_all(".js-plotly-plot", f"els => els.map({MARKS_JS})"),
                divs=page.locator("div.plotly-graph-div").count(),
                tables=page.eval_on_selector_all("table", """ts => ts.map(t =>
                    [...t.rows].map(r => [...r.cells].map(c => c.innerText.trim())))"""),
                errors=watch.errors[before[0]:], outside=watch.outside[before[1]:],
                needs=page.evaluate("() => document.getElementById('needs-plotly')"
                                    "?.innerText ?? null"))
            page.close()
    return seen, watch


def test_run_report_charts_draw_offline(report):
    seen, watch = report
    with watch.failing_with_screenshots():
        here = seen["in place"]
        assert here["divs"] >= 3 and len(here["plots"]) == here["divs"], here["plots"]
        assert all(marks > 1 for marks in here["plots"]), here["plots"]    # none left blank
        print(f"charts (points, bars and markers drawn per chart): {here['plots']}")


def _reasons(tables: list) -> tuple[list[str], dict[str, str]]:
    "Symbols of the signals table, and the result table's reason per symbol."
    signals = next(t for t in tables if t and t[0][:3] == ["symbol", "action", "confidence"])
    symbols = [row[0] for row in signals[1:]]
    result = next(t for t in tables if any(r and r[0] == "orders sent" for r in t))
    return symbols, {r[0]: r[1] for r in result if len(r) == 2 and r[0] in symbols}


def test_run_report_gives_a_reason_for_every_signal(report):
    seen, watch = report
    with watch.failing_with_screenshots():
        symbols, reasons = _reasons(seen["in place"]["tables"])
        assert len(symbols) >= 4, symbols
        assert set(reasons) == set(symbols), (symbols, reasons)
        assert all(re.search(r"\w{3}", why) for why in reasons.values()), reasons
        print("reasons: " + "; ".join(f"{s}: {w}" for s, w in reasons.items()))


def test_run_report_requests_nothing_outside(report):
    seen, watch = report
    with watch.failing_with_screenshots():
        assert seen["in place"]["outside"] == [], seen["in place"]["outside"]


def test_run_report_has_no_console_error_but_the_blocked_cdn(report):
    seen, watch = report
    blocked = [e for e in seen["in place"]["errors"] if "net::ERR_FAILED" in e]
    with watch.failing_with_screenshots():
        assert [e for e in seen["in place"]["errors"] if e not in blocked] == []


def test_run_report_copied_alone_says_what_it_needs(report):
    "Issue 18: copied alone, a run's HTML requests nothing and says its charts need plotly.min.js."
    seen, watch = report
    with watch.failing_with_screenshots():
        alone = seen["alone"]
        assert alone["outside"] == [], alone["outside"]
        assert "need plotly.min.js one folder up" in (alone["needs"] or ""), alone["needs"]
        assert seen["in place"]["needs"] is None          # in place, the charts draw


def test_run_report_shows_quantities_as_whole_numbers(report):
    "Issue 18: a position of 480 shares reads 480, not 480.000000 (cash's blank made it a float)."
    seen, watch = report
    with watch.failing_with_screenshots():
        (held,) = [t for t in seen["in place"]["tables"] if t and t[0][:2] == ["symbol", "qty"]]
        qty = [row[1] for row in held[1:]]
        assert qty and all(re.fullmatch(r"\d[\d,]*|", q) for q in qty), held
        assert any(q for q in qty), held
