"""Promotion: `champion` moves to the challenger only if it wins out of sample, and says why.

Both versions are run greedily, through the same accounting, over a window that neither of them
was trained or selected on: from the day after the later of their validation ends to the end of
the data (or `--start/--end`). The challenger is promoted when its net-of-cost Sharpe beats the
champion's by at least `min_improvement` (or when there is no champion yet). The decision, both
Sharpes and the window are written to the challenger's version tags and description, and to the
champion's tags.

A forecaster (`forecaster-lgbm`, training/forecasters.py) is compared the same way on its own
objective: the mean daily Rank IC of its scores over that window (`min_improvement` in Rank IC).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from training import registry as R


@dataclass
class Decision:
    algo: str
    promoted: bool
    reason: str
    challenger: str | None
    champion_before: str | None
    champion_after: str | None
    window: tuple[str, str] | None = None
    challenger_sharpe: float | None = None   # the out-of-sample score: Sharpe, or Rank IC (metric)
    champion_sharpe: float | None = None
    metric: str = "sharpe"


def _oos(uri_model: str, data_dir, start: str, end: str) -> dict:
    from training.env import EnvSpec
    from training.registry import load_agent
    from training.tune import evaluate, load_data

    agent = load_agent(uri_model)
    spec = EnvSpec.from_dict(agent.spec)
    panel = load_data(data_dir, spec.symbols, end)
    return evaluate(agent.module, panel, agent.spec, start, end)


def _oos_score(algo: str, uri_model: str, data_dir, start: str, end: str) -> tuple[float, str]:
    """(score, a phrase for the reason) of one version out of sample: net-of-cost Sharpe for an RL
    agent, mean daily Rank IC for a forecaster."""
    if algo in R.FORECASTERS:
        from training.forecasters import oos_rank_ic

        f = oos_rank_ic(uri_model, data_dir, start, end)
        return f["rank_ic"], f"{f['days']} days"
    m = _oos(uri_model, data_dir, start, end)
    return m["sharpe"], f"total return {m['total_return']:+.2%}"


def _last_seen(c, name: str, version: str) -> str:
    mv = c.get_model_version(name, version)
    run = c.get_run(mv.run_id)
    return run.data.tags.get("val_window", "..").split("..")[-1] or mv.tags.get("val_end", "")


def promote(algo: str, *, start: str | None = None, end: str | None = None, min_improvement: float = 0.0,
            data_dir: str | None = None, mlflow_dir=None) -> Decision:
    uri = R.tracking_uri(mlflow_dir)
    c = R.client(uri)
    name = R.model_name(algo)
    chal = R.alias_version(uri, algo, R.CHALLENGER)
    champ = R.alias_version(uri, algo, R.CHAMPION)
    if chal is None:
        raise LookupError(f"{name} has no '{R.CHALLENGER}' version in {uri}; run `trader train --algo {algo}` first")
    if champ == chal:
        return Decision(algo, False, f"v{chal} is already the champion", chal, champ, champ)
    if champ is None:
        reason = f"no champion yet: v{chal} becomes champion (selected on validation; nothing to compare out of sample)"
        c.set_registered_model_alias(name, R.CHAMPION, chal)
        c.set_model_version_tag(name, chal, "promotion_decision", "promoted")
        c.set_model_version_tag(name, chal, "promotion_reason", reason)
        c.set_model_version_tag(name, chal, "promoted_at", dt.datetime.now(dt.timezone.utc).isoformat())
        return Decision(algo, True, reason, chal, None, chal)

    seen = max(_last_seen(c, name, chal), _last_seen(c, name, champ))
    if start is None:
        start = (dt.date.fromisoformat(seen) + dt.timedelta(days=1)).isoformat()
    if start <= seen:
        raise ValueError(f"out-of-sample start {start} is not after {seen}, the last date either model was "
                         "trained or selected on")
    if end is None:
        from pathlib import Path

        from market.data import DataPaths, load_prices

        paths = DataPaths(root=Path(data_dir)) if data_dir else DataPaths()
        end = str(load_prices(paths.path("prices"))["date"].max())
    metric = "rank_ic" if algo in R.FORECASTERS else "sharpe"
    label = "mean daily Rank IC" if metric == "rank_ic" else "net-of-cost Sharpe"
    ch, ch_more = _oos_score(algo, f"models:/{name}/{chal}", data_dir, start, end)
    cp, cp_more = _oos_score(algo, f"models:/{name}/{champ}", data_dir, start, end)
    win = ch > cp + min_improvement
    verdict = "beats" if win else "does not beat"
    reason = (f"challenger v{chal} {verdict} champion v{champ} out of sample {start}..{end}: {label} "
              f"{ch:.3f} vs {cp:.3f} (needs more than {min_improvement:+.3f}); {ch_more} vs {cp_more}")
    stamp = dt.datetime.now(dt.timezone.utc).isoformat()
    tags = {"promotion_decision": "promoted" if win else "rejected", "promotion_reason": reason,
            "oos_window": f"{start}..{end}", f"oos_{metric}": f"{ch:.4f}",
            "oos_vs_champion": champ, f"oos_champion_{metric}": f"{cp:.4f}", "decided_at": stamp}
    for k, v in tags.items():
        c.set_model_version_tag(name, chal, k, v)
    c.set_model_version_tag(name, champ, f"oos_vs_v{chal}", f"{cp:.4f} vs {ch:.4f} ({start}..{end})")
    mv = c.get_model_version(name, chal)
    c.update_model_version(name, chal, description=(mv.description or "") + f"\n[{stamp}] {reason}")
    if win:
        c.set_registered_model_alias(name, R.CHAMPION, chal)
    return Decision(algo, win, reason, chal, champ, chal if win else champ, (start, end), ch, cp, metric)
