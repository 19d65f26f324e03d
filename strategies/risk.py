"""Portfolio risk: VaR/CVaR, CVaR-budgeted risk-parity sizing, drawdown protections, VaR backtest.

Conventions: returns are simple daily returns; VaR and CVaR are reported as positive loss
fractions of equity (0.02 = "lose 2% or more on the worst 1-alpha of days").

* `historical_var_cvar`: empirical quantile of losses and the mean loss beyond it.
* `parametric_var_cvar`: normal, or Cornish-Fisher (skew/kurtosis-adjusted quantile; CVaR from
  the adjusted quantiles averaged over the tail), on a portfolio return series.
* `ewma_covariance`: RiskMetrics EWMA (lambda 0.94) asset covariance; `portfolio_var_cvar` turns
  it into a normal VaR/CVaR of given weights.
* `risk_parity`: equal-risk-contribution weights (each asset's w_i (Σw)_i equal).
* `RiskModel.size`: chosen names → ERC weights → scaled so that CVaR ≤ budget, with position and
  gross caps → drawdown protection (ACTIVE / REDUCING / HALTED). JSON-friendly report.
* `var_backtest` + `kupiec_test`: rolling one-day VaR forecasts vs realised returns.
"""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from strategies.caps import cap_weights

ALPHAS = (0.95, 0.99)


def _sizing_inputs(weights, returns_window) -> tuple[np.ndarray, np.ndarray]:
    """The weights and (T, N) returns window a risk layer sizes, checked (both layers take the same)."""
    w_in = np.asarray(weights, float)
    r = np.asarray(returns_window, float)
    if r.ndim != 2 or r.shape[1] != len(w_in):
        raise ValueError(f"returns_window must be (T, {len(w_in)}), got {r.shape}")
    if np.any(w_in < -1e-12) or not np.all(np.isfinite(w_in)):
        raise ValueError("weights must be finite and long-only")
    return w_in, r


def _clean_returns(r) -> np.ndarray:
    r = np.asarray(r, dtype=float).ravel()
    r = r[np.isfinite(r)]
    if len(r) < 2:
        raise ValueError(f"need at least 2 finite returns for VaR, got {len(r)}")
    return r


def _check_alpha(alpha: float):
    if not 0.5 < alpha < 1:
        raise ValueError(f"confidence level must be in (0.5, 1), got {alpha}")


def historical_var_cvar(returns, alpha: float = 0.95) -> tuple[float, float]:
    """Empirical VaR (loss quantile) and CVaR (mean loss at or beyond VaR)."""
    _check_alpha(alpha)
    loss = -_clean_returns(returns)
    var = float(np.quantile(loss, alpha))
    tail = loss[loss >= var]
    return var, float(tail.mean())


def normal_var_cvar(mu: float, sigma: float, alpha: float = 0.95) -> tuple[float, float]:
    """Closed form for returns ~ N(mu, sigma²): VaR = σ z_α − μ, CVaR = σ φ(z_α)/(1−α) − μ."""
    _check_alpha(alpha)
    z = stats.norm.ppf(alpha)
    return float(sigma * z - mu), float(sigma * stats.norm.pdf(z) / (1 - alpha) - mu)


def _cornish_fisher_z(z: np.ndarray, skew: float, exkurt: float) -> np.ndarray:
    return (z + (z ** 2 - 1) * skew / 6 + (z ** 3 - 3 * z) * exkurt / 24
            - (2 * z ** 3 - 5 * z) * skew ** 2 / 36)


def parametric_var_cvar(returns, alpha: float = 0.95, method: str = "cornish-fisher") -> tuple[float, float]:
    """Parametric VaR/CVaR of a return series: 'normal' or 'cornish-fisher'."""
    _check_alpha(alpha)
    r = _clean_returns(returns)
    mu, sigma = float(np.mean(r)), float(np.std(r, ddof=1))
    if method == "normal":
        return normal_var_cvar(mu, sigma, alpha)
    if method != "cornish-fisher":
        raise ValueError(f"unknown parametric method {method!r} (normal | cornish-fisher)")
    skew, exkurt = float(stats.skew(r)), float(stats.kurtosis(r))
    # loss quantiles: the left tail of returns, z at 1-alpha
    z = _cornish_fisher_z(np.array([stats.norm.ppf(1 - alpha)]), skew, exkurt)[0]
    var = -(mu + sigma * z)
    # CVaR: average the adjusted quantile over the tail probabilities (midpoint grid)
    u = (np.arange(200) + 0.5) / 200 * (1 - alpha)
    zt = _cornish_fisher_z(stats.norm.ppf(u), skew, exkurt)
    cvar = float(np.mean(-(mu + sigma * zt)))
    return float(var), max(cvar, float(var))


def ewma_covariance(returns: np.ndarray, lam: float = 0.94) -> np.ndarray:
    """RiskMetrics EWMA covariance of (T, N) returns; NaN returns count as 0 (no position move)."""
    r = np.nan_to_num(np.asarray(returns, dtype=float))
    if r.ndim != 2 or len(r) < 2:
        raise ValueError(f"need (T>=2, N) returns for a covariance, got shape {r.shape}")
    if not 0 < lam < 1:
        raise ValueError(f"EWMA lambda must be in (0, 1), got {lam}")
    w = lam ** np.arange(len(r))[::-1]
    w /= w.sum()
    mu = w @ r
    d = r - mu
    return (d * w[:, None]).T @ d


def portfolio_var_cvar(weights: np.ndarray, cov: np.ndarray, alpha: float = 0.95) -> tuple[float, float]:
    """Normal VaR/CVaR of a portfolio with covariance `cov` (mean taken as 0 over one day)."""
    sigma = float(np.sqrt(max(weights @ cov @ weights, 0.0)))
    return normal_var_cvar(0.0, sigma, alpha)


def risk_contributions(weights: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Each asset's share of portfolio variance: w_i (Σw)_i / w'Σw (sums to 1)."""
    w = np.asarray(weights, float)
    total = w @ cov @ w
    return w * (cov @ w) / total if total > 0 else np.zeros_like(w)


RIDGE = 1e-8  # added to the unit-scaled covariance by risk_parity


def risk_parity(cov: np.ndarray, budgets: np.ndarray | None = None, tol: float = 1e-12,
                max_iter: int = 200) -> np.ndarray:
    """Weights (sum 1, long-only) whose risk contributions match `budgets` (equal by default).

    Newton's method on the convex problem min ½ y'Σy − Σ b_i log y_i (Spinu 2013), whose solution,
    normalised, has risk contributions proportional to b; steps are halved to keep y > 0.
    """
    cov = np.asarray(cov, float)
    n = len(cov)
    if cov.shape != (n, n) or n == 0:
        raise ValueError(f"covariance must be square and non-empty, got {cov.shape}")
    b = np.full(n, 1.0 / n) if budgets is None else np.asarray(budgets, float) / np.sum(budgets)
    if np.any(b <= 0):
        raise ValueError("risk budgets must be positive")
    diag = np.diag(cov).copy()
    if np.any(diag <= 0):
        # a zero-variance asset has no risk to balance; give it a tiny variance so ERC is defined
        diag = np.where(diag > 0, diag, max(diag.max(), 1e-12) * 1e-6)
        cov = cov.copy()
        np.fill_diagonal(cov, diag)
    # scale so the problem is well conditioned whatever the units of the returns; the ridge makes it
    # strictly convex: a sample covariance can hold a riskless long-only mix (a hedged pair, more
    # names than independent return rows), along which the problem has no minimum and Newton's y
    # runs off until the step's system is singular. 1e-8 of the mean variance moves no weight
    # of a well-posed problem by more than ~1e-8.
    scale = float(np.mean(diag))
    c = cov / scale + RIDGE * np.eye(n)
    y = np.sqrt(b / np.diag(c))
    for _ in range(max_iter):
        g = c @ y - b / y
        if np.max(np.abs(g * y)) < tol:
            break
        step = np.linalg.solve(c + np.diag(b / y ** 2), g)
        t = 1.0
        while np.any(y - t * step <= 0):
            t *= 0.5
        y = y - t * step
    return y / y.sum()


# ---------------------------------------------------------------------------- protections

class TradingState(str, enum.Enum):
    ACTIVE = "ACTIVE"  # normal trading
    REDUCING = "REDUCING"  # only sells: no weight may rise above the current holding
    HALTED = "HALTED"  # no buys; positions are closed until the cooldown ends


@dataclass
class DrawdownProtection:
    """Drawdown state machine, NautilusTrader-style trading states.

    drawdown >= reduce_at → REDUCING; >= halt_at → HALTED. REDUCING returns to ACTIVE when the
    drawdown recovers below `resume_below`, or after `cooldown` updates (the high-water mark then
    resets to the current equity: a book that may only sell cannot climb back to its old peak, so
    without the reset REDUCING would never end). HALTED lasts `cooldown` updates, then the mark
    resets and trading resumes in REDUCING. The state is plain data (`to_dict`/`from_dict`) so a
    Serve deployment can keep it.
    """
    reduce_at: float = 0.10
    halt_at: float = 0.20
    resume_below: float = 0.05
    cooldown: int = 20
    state: TradingState = TradingState.ACTIVE
    peak: float = 0.0
    halted_for: int = 0
    reducing_for: int = 0

    def __post_init__(self):
        if not 0 <= self.resume_below < self.reduce_at < self.halt_at < 1:
            raise ValueError("need 0 <= resume_below < reduce_at < halt_at < 1")
        if self.cooldown < 1:
            raise ValueError(f"cooldown must be >= 1 update, got {self.cooldown}")
        self.state = TradingState(self.state)

    def update(self, equity: float) -> TradingState:
        if not np.isfinite(equity) or equity <= 0:
            raise ValueError(f"equity must be positive and finite, got {equity}")
        self.peak = max(self.peak, equity)
        dd = 1.0 - equity / self.peak
        if self.state is TradingState.HALTED:
            self.halted_for += 1
            if self.halted_for >= self.cooldown:
                self.peak, self.halted_for = equity, 0
                self.state, self.reducing_for = TradingState.REDUCING, 0
            return self.state
        if dd >= self.halt_at:
            self.state, self.halted_for = TradingState.HALTED, 0
        elif self.state is TradingState.REDUCING:
            self.reducing_for += 1
            if dd < self.resume_below:
                self.state = TradingState.ACTIVE
            elif self.reducing_for >= self.cooldown:
                self.peak, self.state = equity, TradingState.ACTIVE
        elif dd >= self.reduce_at:
            self.state, self.reducing_for = TradingState.REDUCING, 0
        return self.state

    def apply(self, target: np.ndarray, current: np.ndarray) -> np.ndarray:
        """Restrict targets by the state: REDUCING → min(target, current); HALTED → all zero."""
        if self.state is TradingState.HALTED:
            return np.zeros_like(target)
        if self.state is TradingState.REDUCING:
            return np.minimum(target, np.clip(current, 0.0, None))
        return target

    def to_dict(self) -> dict:
        d = asdict(self)
        d["state"] = self.state.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DrawdownProtection":
        return cls(**d)


# ---------------------------------------------------------------------------- sizing

@dataclass
class RiskModel:
    """Turns combined target weights into risk-sized weights.

    size(weights, returns_window, account_state):
      1. names with weight > min_weight are kept (the combiner chose them);
      2. risk-parity weights among them from the EWMA covariance: equal risk contributions
         (`risk_budgets="equal"`) or contributions proportional to the input weights ("input");
      3. gross = min(sum of input weights, max_gross, the gross at which the portfolio's
         `budget_alpha` CVaR (historical on the window, or EWMA-normal if larger) equals
         `cvar_budget`);
      4. per-position cap, then the drawdown protection's restriction.
    """
    cvar_budget: float = 0.03  # daily CVaR at budget_alpha, fraction of equity
    budget_alpha: float = 0.99
    max_position: float = 0.20
    max_gross: float = 1.0
    min_weight: float = 1e-4
    ewma_lambda: float = 0.94
    min_history: int = 60
    # "equal": equal risk contribution among the chosen names (ERC); "input": risk budgets
    # proportional to the input weights, so the combiner's conviction survives the sizing
    risk_budgets: str = "equal"
    protection: DrawdownProtection = field(default_factory=DrawdownProtection)

    def __post_init__(self):
        if not 0 < self.cvar_budget < 1 or not 0 < self.max_position <= 1 or not 0 < self.max_gross <= 1:
            raise ValueError("need 0 < cvar_budget < 1, 0 < max_position <= 1, 0 < max_gross <= 1")
        if self.risk_budgets not in ("equal", "input"):
            raise ValueError(f"risk_budgets must be 'equal' or 'input', got {self.risk_budgets!r}")

    def size(self, weights: np.ndarray, returns_window: np.ndarray,
             account_state: dict | None = None) -> tuple[np.ndarray, dict]:
        """Sized weights and a JSON-friendly report.

        returns_window: (T, N) daily simple returns of the same N assets, rows before the decision.
        account_state: {"equity": float, "weights": current weights (N,), "protection": dict}
        (all optional). If "protection" is given the state machine is restored from it and the
        updated state is returned in report["protection"]: the caller keeps it between calls.
        """
        w_in, r = _sizing_inputs(weights, returns_window)
        n = len(w_in)
        account_state = account_state or {}
        prot = (DrawdownProtection.from_dict(account_state["protection"])
                if account_state.get("protection") else self.protection)
        current = np.asarray(account_state.get("weights", np.zeros(n)), float)
        if current.shape != (n,):
            raise ValueError(f"account_state weights have shape {current.shape}, want ({n},)")
        if "equity" in account_state:
            prot.update(float(account_state["equity"]))
        report: dict = {"state": prot.state.value, "input_gross": float(w_in.sum())}

        chosen = np.flatnonzero(w_in > self.min_weight)
        out = np.zeros(n)
        if len(chosen) and len(r) >= self.min_history:
            rc = np.nan_to_num(r[:, chosen])  # a missing bar counts as no move
            cov = ewma_covariance(rc, self.ewma_lambda)
            base = risk_parity(cov, None if self.risk_budgets == "equal" else w_in[chosen])
            base = cap_weights(base, self.max_position / max(min(w_in.sum(), self.max_gross), 1e-12))
            # portfolio loss per unit gross, from history (full window) and from EWMA (recent)
            port = rc @ base
            hist = historical_var_cvar(port, self.budget_alpha) if len(port) >= 20 else (0.0, 0.0)
            ew = portfolio_var_cvar(base, cov, self.budget_alpha)
            unit_cvar = max(hist[1], ew[1])
            gross_budget = self.cvar_budget / unit_cvar if unit_cvar > 0 else self.max_gross
            gross = min(float(w_in.sum()), self.max_gross, gross_budget)
            out[chosen] = base * gross
            out = np.minimum(out, self.max_position)
            rcon = risk_contributions(base, cov)
            report.update({
                "gross_cvar_budget": float(gross_budget), "gross": float(out.sum()),
                "unit_cvar_historical": float(hist[1]), "unit_cvar_ewma": float(ew[1]),
                "risk_contributions": {int(i): float(c) for i, c in zip(chosen, rcon)},
                "binding": ("cvar_budget" if gross == gross_budget else
                            "max_gross" if gross == self.max_gross else "input_gross"),
            })
            sized_port = rc @ out[chosen]
            for a in ALPHAS:
                hv, hc = historical_var_cvar(sized_port, a) if len(sized_port) >= 20 else (0.0, 0.0)
                pv, pc = portfolio_var_cvar(out[chosen], cov, a)
                report[f"var_{int(a * 100)}"] = {"historical": hv, "ewma_normal": pv}
                report[f"cvar_{int(a * 100)}"] = {"historical": hc, "ewma_normal": pc}
        else:
            report.update({"gross": 0.0, "binding": "no_positions" if not len(chosen) else "no_history"})
        final = prot.apply(out, current)
        report["gross_after_protection"] = float(final.sum())
        report["protection"] = prot.to_dict()
        return final, report


# ---------------------------------------------------------------------------- VaR backtest

def kupiec_test(breaches: int, n: int, alpha: float = 0.95) -> dict:
    """Kupiec (1995) proportion-of-failures LR test: is the breach rate 1-alpha?"""
    if n <= 0 or not 0 <= breaches <= n:
        raise ValueError(f"need 0 <= breaches <= n and n > 0, got {breaches}, {n}")
    p = 1 - alpha
    x = breaches
    phat = x / n

    def ll(q):
        # x log q + (n-x) log(1-q), with 0 log 0 = 0
        return (x * np.log(q) if x > 0 else 0.0) + ((n - x) * np.log(1 - q) if n - x > 0 else 0.0)

    lr = -2 * (ll(p) - ll(phat)) if 0 < phat < 1 else -2 * (ll(p) - 0.0)
    lr = max(float(lr), 0.0)
    return {"breaches": int(x), "n": int(n), "rate": float(phat), "expected_rate": float(p),
            "lr": lr, "p_value": float(stats.chi2.sf(lr, 1))}


def var_backtest(returns, window: int = 250, alpha: float = 0.95, method: str = "historical") -> dict:
    """Forecast each day's VaR from the previous `window` returns and count breaches."""
    r = np.asarray(returns, float)
    r = r[np.isfinite(r)]
    if len(r) <= window:
        raise ValueError(f"need more than window={window} returns, got {len(r)}")
    breaches = 0
    for t in range(window, len(r)):
        hist = r[t - window:t]
        var = (historical_var_cvar(hist, alpha)[0] if method == "historical"
               else parametric_var_cvar(hist, alpha, method)[0])
        breaches += int(-r[t] > var)
    out = kupiec_test(breaches, len(r) - window, alpha)
    out.update({"method": method, "window": window, "alpha": alpha})
    return out


# ---------------------------------------------------------------------------- overlay

@dataclass
class RiskOverlay:
    """A risk layer that keeps the combiner's ranking: it scales and caps, it never re-weights.

    size(weights, returns_window, account_state), in order:
      1. exposure: the book per unit gross (w / Σw) → its daily volatility (the larger of the
         window's historical and the EWMA estimate) and CVaR at `budget_alpha`; gross =
         min(Σw, max_gross, vol_target / annualised vol, cvar_budget / unit CVaR), never below
         `floor` (nor above Σw): a calm market does not lever the book, a turbulent one halves it
         at most instead of emptying it;
      2. drawdown protection: past `dd_start` below the equity peak the gross shrinks linearly,
         reaching `dd_floor` of itself at `dd_full`; the peak decays toward equity by
         `peak_decay` each decision, so a book that cannot recover its old high is not held
         down for ever (the trap the hard `DrawdownProtection` needs a cooldown reset for);
      3. caps: per name `max_position` (excess to the other names pro rata, order kept), then per
         sector `sector_cap` (a sector over it is scaled down, the excess stays in cash).
    Every step multiplies weights by a common factor or clips the largest ones, so the order of
    the names (the members' conviction) survives. `vol_target`/`cvar_budget` None: not used.
    State (`account_state["protection"]`): {"state": ACTIVE | REDUCING, "peak": equity}.
    """
    vol_target: float | None = 0.15      # annualised
    cvar_budget: float | None = None     # daily CVaR at budget_alpha, fraction of equity
    budget_alpha: float = 0.99
    floor: float = 0.5                   # least gross the exposure step leaves (of Σw at most)
    max_gross: float = 1.0
    max_position: float = 0.15
    sector_cap: float | None = None
    sectors: dict[str, str] = field(default_factory=dict)  # symbol → sector (absent: its own sector)
    dd_start: float = 0.10
    dd_full: float = 0.25
    dd_floor: float = 0.5
    peak_decay: float = 0.01
    ewma_lambda: float = 0.94
    min_history: int = 60

    def __post_init__(self):
        if self.vol_target is not None and not self.vol_target > 0:
            raise ValueError(f"vol_target must be > 0 or None, got {self.vol_target}")
        if self.cvar_budget is not None and not 0 < self.cvar_budget < 1:
            raise ValueError(f"cvar_budget must be in (0, 1) or None, got {self.cvar_budget}")
        if not 0 <= self.floor <= self.max_gross <= 1 or not 0 < self.max_position <= 1:
            raise ValueError("need 0 <= floor <= max_gross <= 1 and 0 < max_position <= 1")
        if self.sector_cap is not None and not 0 < self.sector_cap <= 1:
            raise ValueError(f"sector_cap must be in (0, 1] or None, got {self.sector_cap}")
        if not 0 <= self.dd_start < self.dd_full < 1 or not 0 <= self.dd_floor <= 1:
            raise ValueError("need 0 <= dd_start < dd_full < 1 and 0 <= dd_floor <= 1")
        if not 0 <= self.peak_decay < 1:
            raise ValueError(f"peak_decay must be in [0, 1), got {self.peak_decay}")

    def exposure(self, unit: np.ndarray, returns_window: np.ndarray) -> tuple[float, dict]:
        """The gross the risk targets allow for the unit book (before floor and input caps)."""
        chosen = np.flatnonzero(unit > 0)
        r = np.nan_to_num(np.asarray(returns_window, float)[:, chosen])  # a missing bar: no move
        if not len(chosen) or len(r) < self.min_history:
            return self.max_gross, {"binding": "no_history" if len(chosen) else "no_positions"}
        cov = ewma_covariance(r, self.ewma_lambda)
        port = r @ unit[chosen]
        vol = max(float(np.std(port, ddof=1)), float(np.sqrt(max(unit[chosen] @ cov @ unit[chosen], 0.0))))
        report: dict = {"unit_vol_annual": vol * np.sqrt(252)}
        allowed = {"max_gross": self.max_gross}
        if self.vol_target is not None and vol > 0:
            allowed["vol_target"] = self.vol_target / (vol * np.sqrt(252))
        if self.cvar_budget is not None:
            unit_cvar = max(historical_var_cvar(port, self.budget_alpha)[1],
                            portfolio_var_cvar(unit[chosen], cov, self.budget_alpha)[1])
            report["unit_cvar"] = unit_cvar
            if unit_cvar > 0:
                allowed["cvar_budget"] = self.cvar_budget / unit_cvar
        binding = min(allowed, key=lambda k: allowed[k])
        report.update({"allowed": {k: float(v) for k, v in allowed.items()}, "binding": binding})
        return float(allowed[binding]), report

    def cap(self, w: np.ndarray, symbols) -> np.ndarray:
        w = cap_weights(w, self.max_position) if w.max(initial=0.0) > self.max_position else w.copy()
        if self.sector_cap is not None and symbols is not None:
            groups = np.array([self.sectors.get(s, f"_{s}") for s in symbols])
            for g in np.unique(groups[w > 0]):
                inside = groups == g
                total = w[inside].sum()
                if total > self.sector_cap:
                    w[inside] *= self.sector_cap / total
        return w

    def tail_report(self, w: np.ndarray, returns_window: np.ndarray) -> dict:
        """VaR/CVaR of the sized book (what the monitoring shows, as for RiskModel)."""
        chosen = np.flatnonzero(w > 0)
        r = np.nan_to_num(np.asarray(returns_window, float)[:, chosen])
        if not len(chosen) or len(r) < max(self.min_history, 20):
            return {}
        cov = ewma_covariance(r, self.ewma_lambda)
        port = r @ w[chosen]
        out: dict = {}
        for a in ALPHAS:
            hv, hc = historical_var_cvar(port, a)
            pv, pc = portfolio_var_cvar(w[chosen], cov, a)
            out[f"var_{int(a * 100)}"] = {"historical": hv, "ewma_normal": pv}
            out[f"cvar_{int(a * 100)}"] = {"historical": hc, "ewma_normal": pc}
        return out

    def size(self, weights: np.ndarray, returns_window: np.ndarray,
             account_state: dict | None = None) -> tuple[np.ndarray, dict]:
        """Scaled and capped weights, and a JSON-friendly report (same interface as RiskModel)."""
        w_in, r = _sizing_inputs(weights, returns_window)
        n = len(w_in)
        account_state = account_state or {}
        saved = dict(account_state.get("protection") or {})
        peak = float(saved.get("peak", 0.0))
        input_gross = float(w_in.sum())
        report: dict = {"input_gross": input_gross}
        if input_gross <= 0:
            out = np.zeros(n)
            report.update({"gross": 0.0, "binding": "no_positions"})
        else:
            unit = w_in / input_gross
            allowed, rep = self.exposure(unit, r)
            report.update(rep)
            gross = min(input_gross, max(allowed, self.floor))
            report["gross_before_drawdown"] = gross
            out = unit * gross
        multiplier, dd = 1.0, 0.0
        equity = account_state.get("equity")
        if equity is not None:
            equity = float(equity)
            if not np.isfinite(equity) or equity <= 0:
                raise ValueError(f"equity must be positive and finite, got {equity}")
            peak = max(equity, peak * (1.0 - self.peak_decay))
            dd = 1.0 - equity / peak
            if dd > self.dd_start:
                depth = min((dd - self.dd_start) / (self.dd_full - self.dd_start), 1.0)
                multiplier = 1.0 - depth * (1.0 - self.dd_floor)
        out = self.cap(out * multiplier, account_state.get("symbols"))
        report.update(self.tail_report(out, r))
        state = "REDUCING" if multiplier < 1.0 else "ACTIVE"
        report.update({"state": state, "drawdown": dd, "drawdown_multiplier": multiplier,
                       "gross": float(out.sum()), "gross_after_protection": float(out.sum()),
                       "protection": {"state": state, "peak": peak}})
        return out, report
