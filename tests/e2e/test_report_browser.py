"""The backtest report (report.html) in a real headless Chromium: it renders without errors,
every chart loads and fills the page width, the tables carry the Korean stock names, and the
charts draw Hangul with a real font (no missing-glyph boxes). Leaves a screenshot as a test
artifact."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.e2e.browser import CHROMIUM, ERROR_MARKS, artifacts_dir, chromium_page

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_report_charts_draw_hangul_with_a_real_font():
    import matplotlib

    from backtest.report import _pnl_chart, chart_style, hangul_font_available
    from backtest.summary import SymbolPnl

    assert hangul_font_available(), "no Hangul font for matplotlib: run .ci/system-setup.sh (fonts-nanum)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with matplotlib.rc_context(chart_style()):
            _pnl_chart((SymbolPnl("005930", "삼성전자", 1_000_000), SymbolPnl("035720", "카카오", -500_000)))
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert not missing, missing


def test_hangul_font_is_found_when_matplotlib_cached_its_font_list_before_the_font_was_installed(tmp_path):
    """CI failed stop 20 on this: matplotlib's font list, cached on a machine before fonts-nanum was
    installed, hid the installed font, so every chart drew boxes for Korean names."""
    from matplotlib import font_manager

    from backtest.report import HANGUL_FONTS

    fonts = json.loads(json.dumps(font_manager.fontManager, cls=font_manager._JSONEncoder))
    fonts["ttflist"] = [f for f in fonts["ttflist"] if f["name"] not in HANGUL_FONTS]
    (tmp_path / f"fontlist-v{font_manager.FontManager.__version__}.json").write_text(json.dumps(fonts))
    probe = "from backtest.report import hangul_font_available; print(hangul_font_available())"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "MPLCONFIGDIR": str(tmp_path), "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "True", out.stderr


def test_report_renders_in_chromium_with_names_and_full_width_charts(tmp_path):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (run .ci/system-setup.sh)")
    out = tmp_path / "bt"
    done = subprocess.run([sys.executable, "-m", "cluster.cli", "backtest", "--strategy", "equal-weight-monthly",
                           "--prices", "data/kr_stocks_daily.parquet", "--index", "data/kr_index_daily.parquet",
                           "--start", "2022-01-03", "--end", "2022-12-29", "--out", str(out), "--no-track", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)["summary"]
    by_symbol = summary["trades"]["by_symbol"]
    best, worst = by_symbol[0], by_symbol[-1]
    assert any(ord(c) > 0xAC00 for c in best["name"] + worst["name"])  # Hangul names in this run

    async def drive():
        async with chromium_page(tmp_path / "profile", width=1600, height=3000) as page:
            await page.call("Page.navigate", url=(out / "report.html").as_uri())
            text = await page.wait_for(["Versus benchmarks", "KOSPI200", best["name"], worst["name"],
                                        f"+₩{best['pnl']:,}", "₩100,000,000"], 60)
            images = await page.evaluate(
                "Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0,"
                " i.getBoundingClientRect().width])")
            body = await page.evaluate("document.querySelector('h1').getBoundingClientRect().width")
            png = await page.screenshot(artifacts_dir() / "report.png")
            return text, images, body, png

    text, images, body, png = asyncio.run(drive())
    print(f"\nreport screenshot: {png}")
    assert png.stat().st_size > 50_000
    assert [alt for alt, _, _ in images] == ["equity", "drawdown", "pnl_by_symbol", "monthly", "rolling_sharpe",
                                              "exposure"]
    assert all(ok for _, ok, _ in images), images
    assert all(width >= 0.99 * body for _, _, width in images), (images, body)  # full width of the page
    for mark in ERROR_MARKS:
        assert mark not in text
    assert "100000000" not in text   # cash formatted, never a raw number
