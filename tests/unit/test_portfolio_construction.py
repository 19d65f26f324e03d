"""Portfolio construction (TopkDropout, TiltedEqualWeight), the risk overlay and the choice on validation windows."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

from market.data import Panel
from strategies.baselines import EqualWeightRebalanced
from strategies.construction import TiltedEqualWeight, TopkDropout, rank_scores
from strategies.pipeline import Account, DecisionConfig, DecisionPipeline, Snapshot
from strategies.risk import RiskOverlay
from strategies.selection import (
    choose_on_validation,
    validation_slice,
    walk_forward_choice,
)


def held_of(w: np.ndarray) -> set[int]:
    return {int(i) for i in np.flatnonzero(w > 1e-4)}


# ------------------------------------------------------------------------------ TopkDropout

def test_first_build_holds_the_k_best_equally():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3, 0.8])
    w, rep = TopkDropout(k=3, n_drop=1).construct(scores, np.zeros(6))
    assert held_of(w) == {1, 3, 5}
    np.testing.assert_allclose(w[[1, 3, 5]], 1 / 3)
    assert sorted(rep["bought"]) == [1, 3, 5] and rep["swapped_out"] == []


def test_at_most_n_swaps_per_rebalance_and_always_k_held():
    rng = np.random.default_rng(7)
    topk = TopkDropout(k=8, n_drop=2, band=0.0)
    current = np.zeros(40)
    for step in range(60):
        scores = rng.normal(size=40)
        target, _ = topk.construct(scores, current)
        before, after = held_of(current), held_of(target)
        if step > 0:
            assert len(before - after) <= 2, f"step {step}: sold {before - after}"
            assert len(after - before) <= 2
        assert len(after) == 8
        # a swap only ever replaces a held name by a strictly better-scored one
        for out in before - after:
            assert all(scores[i] > scores[out] for i in after - before)
        current = target


def test_hysteresis_keeps_a_held_name_that_is_only_slightly_worse():
    topk = TopkDropout(k=2, n_drop=2, band=0.0)
    w0, _ = topk.construct(np.array([3.0, 2.0, 1.0]), np.zeros(3))
    # name 2 now ranks second, name 1 third: only the swap is bought, the top name stays
    w1, rep = TopkDropout(k=2, n_drop=1, band=0.0).construct(np.array([3.0, 1.0, 2.0, 0.5]), np.append(w0, 0))
    assert held_of(w1) == {0, 2} and rep["swapped_out"] == [1]
    # no strictly better candidate: no swap, even though n_drop allows it
    w2, rep2 = TopkDropout(k=2, n_drop=1, band=0.0).construct(np.array([3.0, 1.0, 1.0]), w0)
    assert held_of(w2) == {0, 1} and rep2["swapped_out"] == []


def test_rebalance_band_leaves_small_drifts_alone():
    current = np.array([0.26, 0.24, 0.3, 0.2, 0.0])   # drifted off 0.25 each
    target, rep = TopkDropout(k=4, n_drop=1, band=0.02).construct(np.array([4, 3, 2, 1, 0.0]), current)
    # names 0, 1 moved by 0.01 (< band): untouched; names 2, 3 moved by 0.05: traded back to 0.25
    assert target[0] == current[0] and target[1] == current[1]
    assert target[2] == pytest.approx(0.25) and target[3] == pytest.approx(0.25)
    assert sorted(rep["banded"]) == [0, 1]


def test_turnover_budget_caps_one_rebalance():
    current = np.zeros(10)
    target, rep = TopkDropout(k=5, n_drop=5, band=0.0, max_turnover=0.2).construct(np.arange(10.0), current)
    assert 0.5 * np.abs(target - current).sum() == pytest.approx(0.2)
    assert rep["turnover_scale"] == pytest.approx(0.4)   # 0.2 of the 0.5 a full entry needs


def test_a_held_name_without_a_bar_keeps_its_weight_and_seat():
    current = np.array([0.5, 0.5, 0.0, 0.0])
    tradable = np.array([False, True, True, True])
    target, _ = TopkDropout(k=2, n_drop=2, band=0.0).construct(np.array([0.0, 0.1, 5.0, 4.0]), current, tradable)
    assert target[0] == 0.5                    # cannot be sold today
    assert held_of(target) == {0, 2}           # the sellable held name went for the best candidate


def test_score_weighting_follows_the_scores():
    target, _ = TopkDropout(k=2, n_drop=2, weighting="score", band=0.0).construct(np.array([3.0, 1.0, 0.5]),
                                                                                   np.zeros(3))
    np.testing.assert_allclose(target, [0.75, 0.25, 0.0])


def test_rank_scores_ignore_a_member_that_does_not_discriminate():
    members = {"a": np.array([0.5, 0.3, 0.0, 0.0]), "flat": np.full(4, 0.25)}
    s = rank_scores(members, {"a": 0.5, "flat": 0.5})
    assert s[0] > s[1] > s[2] == s[3]


# ------------------------------------------------------------------------------ TiltedEqualWeight

def test_tilt_zero_is_the_equal_weight_book_over_the_tradable_names():
    rng = np.random.default_rng(0)
    close = 10_000 * np.cumprod(1 + rng.normal(0, 0.01, (5, 8)), axis=0)
    close[-1, [2, 5]] = np.nan  # no bar today: the equal-weight baseline leaves them out too
    dates = np.arange(np.datetime64("2022-01-03"), np.datetime64("2022-01-08")).astype("datetime64[D]")
    window = Panel(dates, tuple(f"{i:06d}" for i in range(8)), close, close, close, close,
                   np.ones_like(close))
    ew = EqualWeightRebalanced().target_weights(window)
    w, _ = TiltedEqualWeight(tilt=0.0, max_weight=1.0).construct(rng.normal(size=8), np.zeros(8),
                                                                  np.isfinite(close[-1]))
    np.testing.assert_allclose(w, ew)
    assert w.sum() == pytest.approx(1.0)


def test_tilt_orders_the_weights_by_the_score_rank_and_sums_to_gross():
    scores = np.array([0.3, -1.0, 2.0, 0.0, 0.9, 5.0])
    w, _ = TiltedEqualWeight(tilt=1.0, max_weight=1.0).construct(scores, np.zeros(6))
    assert list(np.argsort(w)) == list(np.argsort(scores))
    assert w.sum() == pytest.approx(1.0)
    # tilt 1: ranks 0 … 1 around 0.5 → raw weights 0.5 … 1.5, the best three times the worst
    assert w.max() / w.min() == pytest.approx(3.0)
    # a larger tilt gives the bottom names nothing, never a short
    w4, _ = TiltedEqualWeight(tilt=4.0, max_weight=1.0).construct(scores, np.zeros(6))
    assert np.all(w4 >= 0) and w4[1] == 0.0 and w4.sum() == pytest.approx(1.0)


def test_tilt_respects_the_cap_and_leaves_cash_when_every_name_is_capped():
    scores = np.arange(20.0)
    w, _ = TiltedEqualWeight(tilt=4.0, max_weight=0.08).construct(scores, np.zeros(20))
    assert w.max() <= 0.08 + 1e-12 and w.sum() == pytest.approx(1.0)
    assert np.all(np.diff(w) >= -1e-12)  # the excess went to the next names, the order kept
    few, _ = TiltedEqualWeight(tilt=1.0, max_weight=0.1).construct(np.arange(5.0), np.zeros(5))
    np.testing.assert_allclose(few, 0.1)  # 5 names × 10 % cap: half the book stays cash


def test_tilt_ties_share_weight_and_top_half_keeps_the_better_names():
    scores = np.array([0.0, 0.0, 0.0, 0.0, 0.2, 0.4])  # a member that holds two names
    w, _ = TiltedEqualWeight(tilt=2.0, max_weight=1.0).construct(scores, np.zeros(6))
    np.testing.assert_allclose(w[:4], w[0])
    assert w[5] > w[4] > w[0] > 0
    half, _ = TiltedEqualWeight(tilt=0.0, breadth="top-half", max_weight=1.0).construct(np.arange(6.0), np.zeros(6))
    np.testing.assert_allclose(half, [0, 0, 0, 1 / 3, 1 / 3, 1 / 3])


def test_tilt_band_holds_small_moves_and_a_name_without_a_bar_keeps_its_weight():
    scores = np.arange(10.0)
    c = TiltedEqualWeight(tilt=1.0, max_weight=1.0, band=0.005)
    target, _ = c.construct(scores, np.zeros(10))
    current = target + np.r_[0.004, -0.004, 0.02, -0.02, np.zeros(6)]  # two small drifts, two large
    w, rep = c.construct(scores, current)
    assert set(rep["banded"]) >= {0, 1} and w[0] == current[0] and w[1] == current[1]
    np.testing.assert_allclose(w[2:], target[2:])  # the large drifts go back to the target
    current = target.copy()
    current[9] = 0.3                                  # grew far, and has no bar today: cannot trade
    tradable = np.r_[np.ones(9, bool), False]
    w, _ = TiltedEqualWeight(tilt=1.0, max_weight=1.0).construct(scores, current, tradable)
    assert w[9] == 0.3 and w.sum() == pytest.approx(1.0) and np.all(w >= 0)


def test_tilt_is_causal_it_reads_only_the_decision_time_inputs():
    # the construction sees scores, the book and today's tradability: the same inputs give the
    # same book whatever follows (the whole ensemble is checked against truncated data in
    # tests/unit/test_strategies_lookahead.py)
    rng = np.random.default_rng(5)
    scores, current = rng.normal(size=30), rng.dirichlet(np.ones(30)) * 0.9
    c = TiltedEqualWeight(tilt=2.0, band=0.01)
    np.testing.assert_array_equal(c.construct(scores, current)[0], c.construct(scores.copy(), current.copy())[0])


def test_a_config_with_a_construction_survives_asdict_as_serve_is_bound():
    for construction in (TiltedEqualWeight(tilt=2.0, band=0.005), TopkDropout(k=5), None):
        config = DecisionConfig(construction=construction)
        assert DecisionConfig(**asdict(config)) == config


def test_pipeline_tilts_the_whole_universe_and_the_overlay_keeps_it_capped():
    rng = np.random.default_rng(3)
    n, days = 40, 300
    close = 10_000 * np.cumprod(1 + rng.normal(0, 0.01, (days, n)), axis=0)
    dates = np.arange(np.datetime64("2021-01-04"), np.datetime64("2021-01-04") + days).astype("datetime64[D]")
    symbols = tuple(f"{i:06d}" for i in range(n))
    members = {"pick": np.r_[np.full(4, 0.25), np.zeros(n - 4)], "ew": np.full(n, 1 / n)}
    for risk in (None, "default"):
        pipe = DecisionPipeline(DecisionConfig(construction=TiltedEqualWeight(tilt=2.0, max_weight=0.05)), risk=risk)
        d, _ = pipe.decide(Snapshot(dates, symbols, close), Account.empty(), members, None, pipe.start(symbols))
        assert np.all(d.targets > 0) and d.targets.sum() <= 1.0 + 1e-9 and d.targets.max() <= 0.05 + 1e-9
        assert d.targets[:4].min() > d.targets[4:].max()  # the members' picks carry more weight


# ------------------------------------------------------------------------------ RiskOverlay

def calm_and_wild(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.005, (250, n)), rng.normal(0, 0.05, (250, n))


def test_overlay_never_levers_a_calm_book_and_keeps_the_order():
    calm, _ = calm_and_wild(4)
    w_in = np.array([0.4, 0.3, 0.2, 0.1])
    out, rep = RiskOverlay(vol_target=0.5, max_position=1.0).size(w_in, calm)
    np.testing.assert_allclose(out, w_in)
    assert rep["binding"] == "max_gross" or rep["gross"] == pytest.approx(1.0)


def test_overlay_scales_gross_to_the_vol_target_down_to_the_floor():
    calm, wild = calm_and_wild(4)
    w_in = np.full(4, 0.25)
    overlay = RiskOverlay(vol_target=0.15, floor=0.5, max_position=1.0)
    mid = calm * 6  # ~ 0.03 daily per name, ~ 0.24 annualised for the equal book
    out, rep = overlay.size(w_in, mid)
    unit_vol = rep["unit_vol_annual"]
    assert out.sum() == pytest.approx(0.15 / unit_vol, rel=1e-9)
    assert np.ptp(out) == pytest.approx(0.0)  # scaled, not re-weighted
    out_wild, rep_wild = overlay.size(w_in, wild)
    assert 0.15 / rep_wild["unit_vol_annual"] < 0.5
    assert out_wild.sum() == pytest.approx(0.5)  # the floor holds


def test_overlay_caps_names_and_sectors():
    calm, _ = calm_and_wild(4)
    overlay = RiskOverlay(vol_target=None, max_position=0.3, sector_cap=0.4,
                          sectors={"A": "chips", "B": "chips", "C": "banks"})
    out, _ = overlay.size(np.array([0.5, 0.2, 0.2, 0.1]), calm, {"symbols": ("A", "B", "C", "D")})
    assert out.max() <= 0.3 + 1e-12
    assert out[0] + out[1] == pytest.approx(0.4)        # chips scaled down to the cap
    assert out[0] >= out[1] and out[2] >= out[3]         # order kept inside
    assert out[3] <= 0.3 and out.sum() <= 1.0


def test_overlay_drawdown_step_shrinks_exposure_and_recovers():
    calm, _ = calm_and_wild(2)
    overlay = RiskOverlay(vol_target=None, max_position=1.0, dd_start=0.10, dd_full=0.30, dd_floor=0.5,
                          peak_decay=0.0)
    w_in = np.array([0.5, 0.5])
    out, rep = overlay.size(w_in, calm, {"equity": 100.0})
    assert out.sum() == pytest.approx(1.0) and rep["state"] == "ACTIVE"
    out, rep = overlay.size(w_in, calm, {"equity": 80.0, "protection": rep["protection"]})
    # 20% down: halfway from 10% to 30% → multiplier 1 − 0.5·(1 − 0.5) = 0.75
    assert rep["drawdown"] == pytest.approx(0.2) and out.sum() == pytest.approx(0.75)
    assert rep["state"] == "REDUCING"
    out, rep = overlay.size(w_in, calm, {"equity": 60.0, "protection": rep["protection"]})
    assert out.sum() == pytest.approx(0.5)               # beyond dd_full: the floor
    out, rep = overlay.size(w_in, calm, {"equity": 101.0, "protection": rep["protection"]})
    assert out.sum() == pytest.approx(1.0) and rep["state"] == "ACTIVE"


def test_overlay_peak_decays_so_a_lasting_loss_is_not_held_down_for_ever():
    calm, _ = calm_and_wild(2)
    overlay = RiskOverlay(vol_target=None, max_position=1.0, peak_decay=0.05)
    _, rep = overlay.size(np.array([0.5, 0.5]), calm, {"equity": 100.0})
    for _ in range(10):
        out, rep = overlay.size(np.array([0.5, 0.5]), calm, {"equity": 75.0, "protection": rep["protection"]})
    assert rep["protection"]["peak"] == pytest.approx(max(75.0, 100 * 0.95 ** 10))
    assert out.sum() == pytest.approx(1.0)  # 0.95^10 · 100 ≈ 59.9 < 75: the old peak is forgotten


# ------------------------------------------------------------------------------ in the pipeline

def test_pipeline_constructs_top_k_against_the_real_book():
    rng = np.random.default_rng(3)
    n, days = 12, 80
    close = 10_000 * np.cumprod(1 + rng.normal(0, 0.01, (days, n)), axis=0)
    dates = np.arange(np.datetime64("2022-01-03"), np.datetime64("2022-01-03") + days).astype("datetime64[D]")
    symbols = tuple(f"{i:06d}" for i in range(n))
    pipe = DecisionPipeline(DecisionConfig(construction=TopkDropout(k=4, n_drop=1, band=0.0)), risk=None)
    state = pipe.start(symbols)
    snap = Snapshot(dates[:70], symbols, close[:70])
    member = {"m": np.r_[np.full(6, 1 / 6), np.zeros(6)]}
    d1, state = pipe.decide(snap, Account.empty(), member, None, state)
    assert len(held_of(d1.targets)) == 4
    # the account holds those 4; the member now prefers names 6..11: only one seat changes
    px = snap.last_known_close()
    shares = {s: int(1e8 * w / p) for s, w, p in zip(symbols, d1.targets, px) if w > 0}
    account = Account(cash=int(1e8 - sum(shares[s] * px[symbols.index(s)] for s in shares)), positions=shares)
    snap2 = Snapshot(dates[:75], symbols, close[:75])
    d2, _ = pipe.decide(snap2, account, {"m": np.r_[np.zeros(6), np.full(6, 1 / 6)]}, None, state)
    assert len(held_of(d2.targets)) == 4
    assert len(held_of(d1.targets) - held_of(d2.targets)) == 1
    assert d2.explanation["risk"]["construction"]["swapped_out"]


def test_rank_score_needs_a_construction_step():
    with pytest.raises(ValueError, match="construction"):
        DecisionConfig(score="rank", construction=None)


# ------------------------------------------------------------------------------ choice on validation

def two_candidates(seed: int = 0):
    dates = np.arange(np.datetime64("2019-01-01"), np.datetime64("2022-01-01")).astype("datetime64[D]")
    rng = np.random.default_rng(seed)
    good_then = rng.normal(0.001, 0.01, len(dates))
    bad_then = rng.normal(-0.001, 0.01, len(dates))
    return dates, good_then, bad_then


def test_choice_never_reads_the_test_window():
    dates, a, b = two_candidates()
    test_start = np.datetime64("2021-01-01")
    in_test = dates >= test_start
    chosen, scores = choose_on_validation({"a": (dates, a), "b": (dates, b)}, test_start)
    # the same choice and the same numbers with the data cut at the test start …
    cut = ~in_test
    chosen_cut, scores_cut = choose_on_validation({"a": (dates[cut], a[cut]), "b": (dates[cut], b[cut])},
                                                  test_start)
    assert (chosen, scores) == (chosen_cut, scores_cut)
    # … and with a test window rigged to favour the other candidate
    a2, b2 = a.copy(), b.copy()
    a2[in_test], b2[in_test] = -0.05, 0.05
    assert choose_on_validation({"a": (dates, a2), "b": (dates, b2)}, test_start) == (chosen, scores)
    assert chosen == "a"


def test_validation_slice_is_strictly_before_the_test_start():
    dates, a, _ = two_candidates()
    r = validation_slice(dates, a, "2021-01-01", 100)
    assert len(r) == 100 and np.array_equal(r, a[dates < np.datetime64("2021-01-01")][-100:])


def test_walk_forward_choice_stitches_each_window_from_its_own_choice():
    dates, a, b = two_candidates()
    # b is the better one in 2020 only: it is chosen for 2021 (judged on 2019–2020 … ) only if 2020 counts
    b = b.copy()
    in_2020 = (dates >= np.datetime64("2020-01-01")) & (dates < np.datetime64("2021-01-01"))
    b[in_2020] = np.abs(b[in_2020]) + 0.002
    d, r, choices = walk_forward_choice({"a": (dates, a), "b": (dates, b)}, ["2020-01-01", "2021-01-01"],
                                        "2021-12-31", validation_days=250)
    assert [c["chosen"] for c in choices] == ["a", "b"]
    np.testing.assert_array_equal(r, np.where(d < np.datetime64("2021-01-01"), a[dates >= np.datetime64(
        "2020-01-01")], b[dates >= np.datetime64("2020-01-01")]))


# ------------------------------------------------------------------------------ ValidatedEnsemble

def _validated_world():
    from market.data import DataPaths, load_panel

    panel = load_panel(DataPaths(), start="2018-01-02", end="2020-06-30")
    panel = panel.select([s for s in ("005930", "000660", "005380", "035420", "051910", "068270", "105560",
                                      "055550", "017670", "096770") if s in panel.symbols])
    return panel


def _validated(validation_days=120):
    from backtest.engine import BacktestConfig
    from strategies.baselines import EqualWeightRebalanced
    from strategies.ensemble import EnsembleAgent
    from strategies.selection import ValidatedEnsemble
    from strategies.technical import TechnicalAgent

    def members():
        return {"technical": TechnicalAgent(), "equal-weight": EqualWeightRebalanced(name="equal-weight")}

    def make(config, risk):
        return lambda m, meta: EnsembleAgent(m, meta=meta, config=config, risk=risk)
    variants = {"none": make(DecisionConfig(), None), "overlay": make(DecisionConfig(), RiskOverlay()),
                "top-3": make(DecisionConfig(construction=TopkDropout(k=3, n_drop=1)), None)}
    return ValidatedEnsemble(members, variants, validation_days=validation_days,
                             backtest_config=BacktestConfig(min_trade_value=200_000)), members


def test_validated_ensemble_chooses_on_the_end_of_its_history_only():
    from backtest.engine import BacktestConfig, run_backtest
    from backtest.walkforward import walk_forward, walk_forward_windows
    from strategies.selection import blend_weights

    panel = _validated_world()
    test_start = int(np.searchsorted(panel.dates, np.datetime64("2020-01-02", "D")))
    windows = walk_forward_windows(len(panel), train=test_start - 5, test=60, gap=5, first_test=test_start,
                                   expanding=True)[:1]
    made = []

    def factory(seed):
        made.append(_validated()[0])
        return made[-1]
    walk_forward(factory, panel, windows, config=BacktestConfig(min_trade_value=200_000))
    in_walk_forward = made[0].chosen
    # the same choice from a panel physically cut before the test window starts
    cut = panel.rows(0, windows[0].train[1])
    alone, members = _validated()
    alone.fit(cut)
    assert alone.chosen == in_walk_forward
    assert np.datetime64(alone.chosen["validation_start"]) < panel.dates[windows[0].test[0]]
    # the member weights are the best blend of the members' own validation runs
    start = cut.date(len(cut) - 120)
    returns = {k: run_backtest(m, cut, start, None, BacktestConfig(min_trade_value=200_000)).returns
               for k, m in members().items()}
    assert alone.chosen["member_weights"] == blend_weights(returns)[0]
    assert alone.chosen["variant"] == max(alone.chosen["variant_sharpe"], key=alone.chosen["variant_sharpe"].get)


def test_blend_weights_pick_the_better_member_and_the_grid_covers_the_simplex():
    from strategies.selection import blend_weights, simplex_grid

    g = simplex_grid(3, 0.1)
    assert len(g) == 66 and np.allclose(g.sum(axis=1), 1) and (g >= 0).all()
    rng = np.random.default_rng(1)
    good, bad = rng.normal(0.002, 0.01, 500), rng.normal(-0.001, 0.01, 500)
    weights, _ = blend_weights({"bad": bad, "good": good})
    assert weights["good"] > weights["bad"]


def test_sizing_on_the_sizing_window_equals_sizing_on_the_whole_snapshot():
    # the Serve Risk deployment gets only pipeline.sizing_window(snap): the same sizing, the same
    # report, also for a held name whose last close is older than the risk window (suspended)
    rng = np.random.default_rng(5)
    n, days = 8, 400
    close = 10_000 * np.cumprod(1 + rng.normal(0, 0.015, (days, n)), axis=0)
    dates = np.arange(np.datetime64("2021-01-04"), np.datetime64("2021-01-04") + days).astype("datetime64[D]")
    symbols = tuple(f"{i:06d}" for i in range(n))
    pipe = DecisionPipeline()
    combined = np.full(n, 1 / n)
    account = Account(cash=50_000_000, positions={symbols[0]: 1_000, symbols[3]: 500})
    for suspended_for in (0, 10, 300):
        c = close.copy()
        if suspended_for:
            c[-suspended_for:, 3] = np.nan
        snap = Snapshot(dates, symbols, c)
        window = pipe.sizing_window(snap)
        assert len(window.dates) == (pipe.config.risk_window + 1 if suspended_for < 300 else days)
        whole = pipe.size(snap, account, combined, pipe.start(symbols))
        part = pipe.size(window, account, combined, pipe.start(symbols))
        np.testing.assert_array_equal(whole[0], part[0])
        assert whole[1] == part[1] and whole[2] == part[2]
