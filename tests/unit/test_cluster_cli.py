"""The `trader` cluster commands: registered, --help with examples, clear refusals, safety gate."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.cli import build_parser, main
from cluster.commands._common import CommandError
from cluster.commands.run import check_mode
from cluster.settings import Mode

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ["up", "down", "submit", "serve", "run", "status", "dashboard"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"trader {command}" in out


def test_trader_cli_runs_as_a_module():
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0
    for command in COMMANDS:
        assert command in r.stdout


def test_live_needs_the_flag_and_vice_versa():
    with pytest.raises(CommandError, match="pass --live"):
        check_mode(Mode.LIVE, live_flag=False)
    with pytest.raises(CommandError, match="ambiguous"):
        check_mode(Mode.PAPER, live_flag=True)
    assert check_mode(Mode.PAPER, live_flag=False) is None
    assert check_mode(Mode.SIM, live_flag=False) is None


def test_live_refuses_a_wrong_account_confirmation(monkeypatch, tmp_path):
    pytest.importorskip("broker.kis.config", reason="the KIS client (broker/kis) is not in this checkout")
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("KIS_APP_KEY", "PSabcdefghijklmnop")
    monkeypatch.setenv("KIS_APP_SECRET", "secret-secret-secret")
    monkeypatch.setenv("KIS_ACCOUNT", "12345678-01")
    shown = []
    with pytest.raises(CommandError, match="does not match"):
        check_mode(Mode.LIVE, True, input_fn=lambda _: "87654321-01", out=shown.append)
    assert all("12345678" not in line for line in shown)  # the prompt shows only a masked account
    creds = check_mode(Mode.LIVE, True, input_fn=lambda _: "12345678-01", out=shown.append)
    assert creds.account == "12345678-01"


def test_vts_without_keys_is_a_clear_error(monkeypatch, tmp_path, capsys):
    for k in ("KIS_APP_KEY", "KIS_APP_SECRET", "KIS_ACCOUNT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--mode", "vts"]) == 2
    err = capsys.readouterr().err
    assert "KIS" in err and "Traceback" not in err


def test_up_with_a_missing_cluster_file_names_it(tmp_path, capsys):
    assert main(["up", "--cluster-config", str(tmp_path / "nope.yaml")]) == 2
    assert "cluster file not found" in capsys.readouterr().err


def test_bad_settings_file_is_reported(tmp_path, capsys):
    bad = tmp_path / "trader.yaml"
    bad.write_text("serve:\n  port: -1\n")
    assert main(["status", "--config", str(bad)]) == 2
    assert "serve.port" in capsys.readouterr().err


def test_submit_rejects_malformed_env(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["submit", "--env", "NOEQUALS", "--", "python", "-c", "pass"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_status_without_cluster_still_reports_the_journal(tmp_path, monkeypatch, capsys):
    """No Ray at the address: the cluster part says so, the journal part still answers."""
    import datetime as dt

    from broker.base import Fill, OrderRequest, Side
    from broker.journal import Journal
    older = Journal(tmp_path / "j.sqlite", run_id="older")   # another run in the same file: not counted
    older.record_intent(OrderRequest("older-1", "005930", "buy", 1), dt.datetime(2023, 12, 1, tzinfo=dt.timezone.utc))
    older.record_account(dt.date(2023, 12, 1), 1_000, 1_000.0, {})
    older.close()
    j = Journal(tmp_path / "j.sqlite", run_id="t")
    at = dt.datetime(2023, 12, 28, 9, tzinfo=dt.timezone.utc)
    for i in range(2):
        j.record_intent(OrderRequest(f"t-{i}", "005930", "buy", 1), at)
    j.record_fill(Fill("t-0", "0001", "005930", Side.BUY, 1, 1_500, 0, 0, at, fill_id="ccld1"))
    j.record_account(dt.date(2023, 12, 28), 1_000, 2_500.0, {"005930": 1})
    j.record_decision(dt.date(2023, 12, 28), {"targets": {"005930": 0.6}, "regime": {"bull": 0.7}})
    j.close()
    from cluster.commands import status
    report = status.journal_status(tmp_path / "j.sqlite", 5)
    assert report["account"] == {"day": "2023-12-28", "cash": 1000, "equity": 2500.0}
    assert report["decisions"][0]["targets"] == {"005930": 0.6}
    assert (report["run_id"], report["orders"], report["fills"]) == ("t", 2, 1)   # the latest run's, counted
    status.print_report({"cluster": {"connected": False, "address": "127.0.0.1:1", "error": "no"},
                         "journal": report})
    out = capsys.readouterr().out
    assert "not reachable" in out and "equity 2,500 KRW" in out and "005930 60.0%" in out
    assert "2 orders, 1 fills" in out


def test_vts_settings_problems_are_named_before_anything_starts(monkeypatch, tmp_path):
    from cluster.commands.run import live_config
    from cluster.settings import load_settings

    monkeypatch.chdir(tmp_path)
    creds = object()
    no_symbols = load_settings(environ={})
    with pytest.raises(CommandError, match="trading.symbols"):
        live_config(no_symbols, Mode.VTS, creds, days=None)
    bad_option = load_settings(environ={"KRT_TRADING__SYMBOLS": "005930", "KRT_LIVE__KIS__RATE_PER_SEC": "5"})
    with pytest.raises(CommandError, match="live.kis.rate_per_sec: not a KIS environment option"):
        live_config(bad_option, Mode.VTS, creds, days=None)
    bad_value = load_settings(environ={"KRT_TRADING__SYMBOLS": "005930", "KRT_LIVE__KIS__RATE_PER_S": "fast"})
    with pytest.raises(CommandError, match="live.kis.rate_per_s: 'fast' is not a float"):
        live_config(bad_value, Mode.VTS, creds, days=None)
    sim_clock_live = load_settings(environ={"KRT_TRADING__SYMBOLS": "005930", "KRT_LIVE__CLOCK": "simulator"})
    with pytest.raises(CommandError, match="live trading runs on the wall clock"):
        live_config(sim_clock_live, Mode.LIVE, creds, days=None)
    ok = live_config(load_settings(environ={"KRT_TRADING__SYMBOLS": "005930,000660",
                                            "KRT_LIVE__HOLIDAYS": "2026-12-31",
                                            "KRT_LIVE__KIS__RATE_PER_S": "2.5"}), Mode.VTS, creds, days=3)
    assert ok.environment.name == "vts" and ok.environment.rate_per_s == 2.5 and ok.days == 3
    assert ok.symbols == ["005930", "000660"] and dt.date(2026, 12, 31) in ok.session.holidays
