"""The daemon — `python -m stockstock` — as a real process against the loopback fake Bot API
server: it answers /ping, fires a scheduled sim run on a short trigger (whose notices arrive),
survives a run that hangs, and exits 0 on SIGTERM after waiting for the run in progress. The bot
token appears in none of its output or logs."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import query, reap, template_with

from stockstock.testing.telegram import DEFAULT_TOKEN, FakeTelegram

pytestmark = pytest.mark.slow

CHAT = 4242


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram(DEFAULT_TOKEN) as fake:
        yield fake



def _start(home: Path, tg: FakeTelegram, *args: str) -> tuple[subprocess.Popen, Path]:
    "`python -m stockstock args...` in `home`, its output (stdout and stderr) to a file."
    env = {**os.environ, "STOCKSTOCK_HOME": str(home), "TELEGRAM_BOT_TOKEN": tg.token,
           "TELEGRAM_CHAT_IDS": str(CHAT), "TELEGRAM_API_URL": tg.url}
    out = home / "daemon.out"
    with open(out, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "stockstock", *args], cwd=home, env=env,
                                stdout=f, stderr=subprocess.STDOUT)
    return proc, out


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen, out: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate(): return value
        assert proc.poll() is None, f"the daemon exited ({proc.returncode}):\n{out.read_text()}"
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s:\n{out.read_text()}")


def _stop(proc: subprocess.Popen, out: Path, timeout: float = 30) -> tuple[int, float]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"no exit {timeout} s after SIGTERM:\n{out.read_text()}") from None
    return code, time.monotonic() - started


def test_daemon_pings_runs_on_schedule_and_stops_on_sigterm(trading_home, tg):
    home = trading_home
    # the replay's next session is 2011-03-16, a day the test model buys on
    con = sqlite3.connect(home / "data/stockstock.db")
    con.execute("UPDATE system_state SET value = '\"2011-03-15\"' WHERE key = 'sim_clock'")
    con.commit()
    con.close()
    proc, out = _start(home, tg, "--params", "scheduled/test.yaml", "--interval-seconds", "2")
    try:
        tg.push_message(CHAT, "/ping")
        _wait(lambda: any(m.text == "pong" for m in tg.sent_to(CHAT)), 30, "no pong", proc, out)
        _wait(lambda: query(home, "SELECT status FROM runs") == [("ok",)], 60,
              "no scheduled run recorded ok", proc, out)
        _wait(lambda: sum("Order filled" in m.text for m in tg.sent) >= 2, 20,
              "the run's notices did not arrive", proc, out)
        status_answer = _ask(tg, "/status", proc, out)
        for second in (["--params", "scheduled/test.yaml"], ["bot"]):   # one per project home
            r = subprocess.run([sys.executable, "-m", "stockstock", *second], cwd=home,
                               env={**os.environ, "STOCKSTOCK_HOME": str(home),
                                    "TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_CHAT_IDS": "1",
                                    "TELEGRAM_API_URL": tg.url},
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 1, (r.returncode, r.stderr)
            assert f"another daemon or bot is running for this project (pid {proc.pid}" \
                in r.stderr.strip().splitlines()[-1], r.stderr
    finally:
        code, seconds = _stop(proc, out)
    log = out.read_text()
    assert code == 0, log
    assert seconds < 10 and "daemon_stopped" in log, log
    assert "Last run: <code>2011" in status_answer and " <b>ok</b>" in status_answer
    assert {r for r, in query(home, "SELECT status FROM runs")} == {"ok"}   # none left running
    assert {s for s, in query(home, "SELECT status FROM notices")} == {"sent"}
    texts = [m.text for m in tg.sent if "Order filled" in m.text]
    assert len(texts) == len(set(texts)) >= 2                                # once each
    assert tg.commands and tg.commands[0]["command"] == "stop"              # the command menu
    files = [out, *(home / "data/logs").glob("*")]
    assert not [f for f in files if DEFAULT_TOKEN.encode() in f.read_bytes()]
    assert reap(home, grace=10) == []


def _ask(tg: FakeTelegram, command: str, proc: subprocess.Popen, out: Path) -> str:
    before = len(tg.sent_to(CHAT))
    tg.push_message(CHAT, command)
    _wait(lambda: len(tg.sent_to(CHAT)) > before, 20, f"no answer to {command}", proc, out)
    return tg.sent_to(CHAT)[before].text


def test_a_hung_run_is_stopped_and_the_daemon_goes_on(trading_home, tg):
    "A home-local template (which `runs.template_path` prefers) whose first step hangs."
    home = trading_home
    template_with(home, "open_run", "import time\ntime.sleep(300)  # hung")
    proc, out = _start(home, tg, "--params", "scheduled/test.yaml", "--interval-seconds", "1",
                       "--run-timeout", "5")
    try:
        _wait(lambda: "scheduled_run_timed_out" in out.read_text(), 60, "no run timed out",
              proc, out)
        assert _ask(tg, "/ping", proc, out) == "pong"           # still there, still answering
        _wait(lambda: "scheduled_run_started" in out.read_text().split(
            "scheduled_run_timed_out", 1)[1], 20, "no second run", proc, out)
    finally:
        code, seconds = _stop(proc, out)                        # waits for the hung second run
    log = out.read_text()
    assert code == 0 and "daemon_stopped" in log, log
    assert seconds < 5 + 5 + 3, seconds                         # at most its timeout (+ grace)
    assert log.count("scheduled_run_timed_out") == 2, log
    # the first hung run was closed as failed by the second one, and that was told
    assert ("failed",) in query(home, "SELECT status FROM runs")
    assert any(m.text.startswith("<b>❌ Run failed</b>") and "interrupted" in m.text
               for m in tg.sent), [m.text for m in tg.sent]
    assert reap(home, grace=10) == []
