"""`trader dashboard`: the Streamlit dashboard over the journal and MLflow (read-only)."""
from __future__ import annotations

import os
import subprocess
import sys

from cluster.commands._common import PROJECT_ROOT, add_settings_arg, new_parser, reports_errors, settings_from

APP = PROJECT_ROOT / "dashboard" / "app.py"


def register(subparsers) -> None:
    p = new_parser(
        subparsers, "dashboard", help="open the Streamlit dashboard",
        description="Serve the Streamlit dashboard on 127.0.0.1: equity and drawdown vs KOSPI200, positions, "
                    "orders and fills, daily P&L, risk, regime, agent weights, MLflow runs and models. It only "
                    "reads the journal (SQLite, read-only) and MLflow, so it never blocks trading; it "
                    "refreshes every dashboard.refresh_s seconds.",
        example_lines=["trader dashboard", "trader dashboard --port 8600 --journal runs/journal.sqlite",
                       "KRT_MLFLOW__TRACKING_URI=http://127.0.0.1:5000 trader dashboard"])
    p.add_argument("--port", type=int, help="HTTP port (default: settings dashboard.port)")
    p.add_argument("--journal", help="journal file (default: settings journal)")
    add_settings_arg(p)
    p.set_defaults(func=main)


def streamlit_command(port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1",
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none",
            # "viewer": no Deploy button and no developer menu: a monitoring page, not an app to edit
            "--client.toolbarMode", "viewer"]


@reports_errors
def main(args) -> int:
    settings = settings_from(args)
    env = dict(os.environ)
    if args.config:
        env["KRT_CONFIG"] = str(args.config)
    if args.journal:
        env["KRT_JOURNAL"] = str(args.journal)
    port = args.port or settings.dashboard.port
    print(f"dashboard: http://127.0.0.1:{port}", flush=True)
    return subprocess.call(streamlit_command(port), env=env, cwd=PROJECT_ROOT)
