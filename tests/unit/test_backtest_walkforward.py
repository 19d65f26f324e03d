"""Walk-forward windows never let training or validation data overlap the test span, refits
see only their train rows, the stitched run is one continuous out-of-sample account, and
`evaluate` fits only on data before its start."""
import numpy as np
import pytest

from backtest.engine import BacktestConfig, run_backtest
from backtest.walkforward import Window, check_windows, evaluate, walk_forward, walk_forward_windows
from market.data import load_panel


@pytest.mark.parametrize("expanding", [False, True])
@pytest.mark.parametrize("validation", [0, 40])
@pytest.mark.parametrize("gap", [0, 5, 21])
def test_windows_never_overlap_test_with_train_or_validation(expanding, validation, gap):
    ws = walk_forward_windows(1000, train=200, test=60, validation=validation, gap=gap, expanding=expanding)
    assert len(ws) > 5
    for prev, w in zip([None] + ws[:-1], ws):
        train = set(range(*w.train))
        test = set(range(*w.test))
        assert not train & test
        assert w.test[0] - w.train[1] >= gap + (validation + gap if validation else 0)
        if validation:
            val = set(range(*w.validation))
            assert not val & test and not val & train
            assert w.validation[0] - w.train[1] == gap and w.test[0] - w.validation[1] == gap
        assert w.train[0] == 0 if expanding else w.train[1] - w.train[0] == 200
        if prev is not None:
            assert w.test[0] == prev.test[1]  # test spans tile: stitched once, no overlap
    assert ws[-1].test[1] == 1000


def test_bad_windows_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        walk_forward_windows(500, train=100, test=50, step=20)
    with pytest.raises(ValueError, match="reach into"):
        check_windows([Window(train=(0, 120), validation=None, test=(100, 150))])
    with pytest.raises(ValueError, match="cannot hold"):
        walk_forward_windows(50, train=100, test=10)


class Recorder:
    """A strategy that records what it was fitted on and what each decision could see."""

    name, lookback = "recorder", 1

    def __init__(self, log):
        self.log = log
        self.fitted_last = None

    def fit(self, history):
        self.fitted_last = history.dates[-1] if len(history) else None
        self.log.append(("fit", history.dates[0] if len(history) else None, self.fitted_last))

    def target_weights(self, window):
        self.log.append(("decide", self.fitted_last, window.dates[-1]))
        live = np.isfinite(window.close[-1])
        return live * (0.9 / max(live.sum(), 1))


@pytest.fixture(scope="module")
def panel():
    return load_panel(symbols=["005930", "000660", "035420", "005380"], start="2019-01-01", end="2021-12-31")


def test_walk_forward_refits_on_train_rows_only_and_stitches_out_of_sample(panel):
    ws = walk_forward_windows(len(panel), train=120, test=60, gap=5)
    logs = {}

    def factory(seed):
        logs.setdefault(seed, [])
        return Recorder(logs[seed])

    res = walk_forward(factory, panel, ws, seeds=(0, 1), config=BacktestConfig(rebalance="weekly"))
    log = logs[0]
    fits = [e for e in log if e[0] == "fit"]
    assert len(fits) == len(ws)
    for (_, first, last), w in zip(fits, ws):
        assert first == panel.dates[w.train[0]] and last == panel.dates[w.train[1] - 1]
    for _, fitted_last, decided_at in (e for e in log if e[0] == "decide"):
        # every decision is at least the gap after the end of the data its model was fitted on
        assert decided_at > fitted_last
        assert np.busday_count(fitted_last, decided_at) >= 5
    stitched = res.runs[0]
    assert stitched.dates[0] == panel.dates[ws[0].test[0] - 1]   # the account as it started
    assert stitched.dates[-1] == panel.dates[-1]
    assert np.all(np.diff(stitched.dates.astype(np.int64)) > 0)  # one continuous curve
    assert len(stitched.dates) == ws[-1].test[1] - ws[0].test[0] + 1
    value = stitched.cash + np.sum(stitched.holdings * np.nan_to_num(stitched.prices), axis=1)
    assert np.allclose(value, stitched.equity)
    summary = res.summary()
    assert summary["sharpe"]["std"] == 0.0  # a deterministic strategy: seeds agree
    assert summary["sharpe"]["mean"] == res.metrics[0]["sharpe"]


def test_seeds_report_mean_and_std(panel):
    ws = walk_forward_windows(len(panel), train=120, test=120, gap=5)

    class Noisy(Recorder):
        def __init__(self, seed):
            super().__init__([])
            self.rng = np.random.default_rng(seed)

        def target_weights(self, window):
            w = self.rng.random(len(window.symbols)) * np.isfinite(window.close[-1])
            return 0.9 * w / max(w.sum(), 1e-9)

    res = walk_forward(Noisy, panel, ws, seeds=(0, 1, 2), config=BacktestConfig(rebalance="monthly"))
    vals = np.array([res.metrics[s]["total_return"] for s in (0, 1, 2)])
    s = res.summary()["total_return"]
    assert s["mean"] == pytest.approx(vals.mean()) and s["std"] == pytest.approx(vals.std(ddof=1)) and s["std"] > 0


def test_evaluate_fits_only_before_start(panel):
    log = []
    agent = Recorder(log)
    m = evaluate(agent, panel, "2021-01-04", "2021-06-30")
    (fit,) = [e for e in log if e[0] == "fit"]
    assert fit[2] < np.datetime64("2021-01-04")
    decisions = [e[2] for e in log if e[0] == "decide"]
    assert decisions[0] < np.datetime64("2021-01-04") <= decisions[1]
    assert m["days"] == len(panel.between("2021-01-04", "2021-06-30")) + 1
    direct = run_backtest(Recorder([]), panel, "2021-01-04", "2021-06-30").metrics()
    assert m["final_equity"] == direct["final_equity"]


def test_select_uses_the_validation_span_and_its_choice_is_traded(panel):
    ws = walk_forward_windows(len(panel), train=120, validation=40, test=60, gap=5)
    calls = []

    class Flat(Recorder):
        def target_weights(self, window):
            return np.zeros(len(window.symbols))

    def select(agent, p, w):
        calls.append(w)
        val = p.rows(*w.validation)
        assert val.dates[-1] < p.dates[w.test[0]] and val.dates[0] > p.dates[w.train[1] - 1]
        return Flat([])  # chosen on validation: trade nothing

    res = walk_forward(lambda seed: Recorder([]), panel, ws, select=select)
    assert calls == ws
    assert len(res.runs[0].fills) == 0 and res.metrics[0]["total_return"] == 0.0


def test_backtest_span_with_costs_keeps_every_other_setting():
    import numpy as np

    # it used to rebuild BacktestConfig field by field and dropped sell_tax (and would drop any new field)
    from backtest.engine import BacktestConfig
    from backtest.walkforward import backtest_span
    from market.accounting import CostModel
    from market.data import load_panel
    panel = load_panel(symbols=["005930", "000660"], start="2023-01-02", end="2023-03-31")
    flip = np.where(np.arange(len(panel))[:, None] % 2 == 0, [0.9, 0.0], [0.0, 0.9])  # sells every week
    config = BacktestConfig(sell_tax=False, rebalance_band=0.02, rebalance="weekly")
    res = backtest_span(flip, panel, "2023-01-03", "2023-03-31",
                        costs=CostModel(commission_rate=0.0005), config=config)
    assert (res.fills["side"] == "sell").sum() > 0 and res.tax.sum() == 0
    assert res.commission.sum() > 0


def test_one_helper_prepares_the_accounting_inputs():
    import numpy as np

    from market.accounting import AccountingInputs

    dates = np.array(["2023-05-26", "2023-05-30", "2023-05-31", "2023-06-01"], dtype="datetime64[D]")
    close = np.array([[100.0, np.nan], [np.nan, 50.0], [102.0, 51.0], [103.0, np.nan]])
    a = AccountingInputs.build(dates, close)
    np.testing.assert_array_equal(a.ref_price, [[100, np.nan], [100, 50], [102, 51], [103, 51]])
    np.testing.assert_array_equal(a.prev_close[1:], a.ref_price[:-1])
    assert np.isnan(a.prev_close[0]).all() and a.sell_tax.shape == (4,)
    assert AccountingInputs.build(dates, close, sell_tax=False).sell_tax.tolist() == [0.0] * 4
