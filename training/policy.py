"""`RLAgent`: a trained RLlib policy behind the Agent protocol (strategies/base.py).

It loads `models:/agent-dqn@champion` (any `models:/` URI, or an agent folder on disk), rebuilds
each observation from a Panel window exactly as `TradingEnv` does — the same feature code, the
normaliser fitted on the model's training window (stored in the model's env_spec.json) and the
one-hot of its own previous action — and returns the action's template as target weights.
`refresh()` re-resolves an alias and swaps in a newly promoted version without a restart.

Without a model (`source=None`) `fit(history)` trains one on the history it is given (default
hyper-parameters, the last year of the history as validation), so a backtest can train on the
data before its start.
"""
from __future__ import annotations

import threading
from dataclasses import asdict

import numpy as np

from market.data import Panel
from strategies.base import AgentAbstains, LookAheadError
from training.env import LOOKBACK, EnvSpec, Normaliser, action_templates, features, observation


class RLAgent:
    lookback = LOOKBACK

    def __init__(self, source: str | None = None, algo: str = "dqn", *, seed: int = 0, train_iters: int = 10,
                 preset: str = "2core"):
        self.algo = algo
        self.name = algo
        self.source = source
        self.seed = seed
        self.train_iters = train_iters
        self.preset = preset
        self.version: str | None = None
        self._lock = threading.Lock()
        self._loaded = None
        self.prev_action = 0
        if source is not None:
            self._load(source)

    # -- model -----------------------------------------------------------------------------------
    def _load(self, source: str) -> None:
        from training.registry import load_agent

        loaded = load_agent(source)
        spec = EnvSpec.from_dict(loaded.spec)
        if spec.normaliser is None:
            raise ValueError(f"{source}: env_spec.json has no fitted normaliser")
        with self._lock:
            self._loaded = loaded
            self.spec = spec
            self.norm = Normaliser.from_dict(spec.normaliser)
            self.templates = action_templates(len(spec.symbols))
            from training.algos import greedy_policy

            self._act = greedy_policy(loaded.module)
            self.version = loaded.version
            self.meta = loaded.meta
            if loaded.meta.get("algo"):
                self.algo = loaded.meta["algo"]

    @property
    def last_seen_date(self) -> str | None:
        """The last date the model's training or selection used (its validation end)."""
        if self._loaded is None:
            return None
        if self.meta.get("data_end"):  # the last bar it was trained or selected on
            return self.meta["data_end"]
        w = self.meta.get("windows") or {}
        return w.get("val_end") or self.spec.train_end

    @property
    def required_symbols(self) -> tuple[str, ...]:
        """The model's fixed universe: a window without all of it gets no decision (AgentAbstains)."""
        return tuple(self.spec.symbols) if self._loaded is not None else ()

    def refresh(self) -> bool:
        """Pick up a new version behind the alias (e.g. after `trader promote`). True if swapped."""
        if self.source is None or not self.source.startswith("models:/") or "@" not in self.source:
            return False
        from training.registry import resolve

        _, version = resolve(self.source)
        if version == self.version:
            return False
        self._load(self.source)
        return True

    def fit(self, history: Panel) -> None:
        """Loaded model: refuse one that saw data after the history ends (LookAheadError, a
        ValueError). Otherwise train on it."""
        self.prev_action = 0
        last = str(history.date(len(history) - 1))
        if self._loaded is not None:
            if self.last_seen_date and self.last_seen_date > last:
                raise LookAheadError(f"{self.name}: model {self.source} was trained/selected on data up to "
                                 f"{self.last_seen_date}, after the history ends ({last}): that is look-ahead; "
                                 "use a model trained before the backtest start")
            return
        self._train(history)

    def _train(self, history: Panel) -> None:
        """Train with default hyper-parameters on `history`; the last ~year is the validation."""
        import tempfile
        from pathlib import Path

        import ray

        from training import algos as A
        from training.env import DEFAULT_UNIVERSE, TradingEnv
        from training.registry import write_agent_dir

        symbols = tuple(s for s in DEFAULT_UNIVERSE if s in history.symbols)
        if not symbols:
            raise ValueError(f"{self.name}: none of the RL universe {DEFAULT_UNIVERSE} is in the history")
        n = len(history)
        if n < LOOKBACK + 400:
            raise ValueError(f"{self.name}: need at least {LOOKBACK + 400} bars of history to train, got {n}")
        train_end = history.date(n - 253)
        spec = EnvSpec(symbols=symbols, train_start=str(history.date(max(0, n - 253 - 252 * 8))),
                       train_end=str(train_end))
        panel = history.select(symbols)
        spec_d = TradingEnv({"panel": panel, "spec": spec}).spec_.to_dict()
        started = False
        if not ray.is_initialized():
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            started = True
        try:
            algo = A.build_config(self.algo, {"panel": panel, "spec": spec_d, "seed": self.seed},
                                  preset=self.preset, seed=self.seed).build_algo()
            for _ in range(self.train_iters):
                algo.train()
            d = Path(tempfile.mkdtemp(prefix=f"krt-{self.algo}-"))
            A.save_module(algo, d / "module_tmp")
            algo.stop()
            meta = {"algo": self.algo, "seed": self.seed,
                    "windows": {"train_start": spec.train_start, "train_end": spec.train_end,
                                "val_end": str(history.date(n - 1))}, "data_end": str(history.date(n - 1))}
            write_agent_dir(d / "agent", d / "module_tmp", spec_d, meta)
        finally:
            if started:
                ray.shutdown()
        self._load(str(d / "agent"))

    # -- decisions -------------------------------------------------------------------------------
    def observe(self, window: Panel) -> np.ndarray:
        """The observation at the window's last bar, exactly as TradingEnv builds it."""
        if self._loaded is None:
            raise RuntimeError(f"{self.name}: no model loaded (pass a source or call fit first)")
        missing = [s for s in self.spec.symbols if s not in window.symbols]
        if missing:
            raise AgentAbstains(f"{self.name}: the window lacks the model's symbols {missing}")
        sub = window.select(self.spec.symbols).tail(LOOKBACK)
        return observation(features(sub)[-1], self.norm, self.prev_action, len(self.templates))

    def target_weights(self, window: Panel) -> np.ndarray:
        missing = [s for s in self.required_symbols if s not in window.symbols]
        if missing:  # checked first: without its universe the model has no decision, not "all cash"
            raise AgentAbstains(f"{self.name}: the window lacks the model's symbols {missing}")
        if len(window) < LOOKBACK:  # the env never decides without a full feature history either
            self.prev_action = 0
            return np.zeros(len(window.symbols))
        with self._lock:
            obs = self.observe(window)
            a = int(self._act(obs))
            self.prev_action = a
            w = np.zeros(len(window.symbols))
            for j, s in enumerate(self.spec.symbols):
                w[window.symbols.index(s)] = self.templates[a][j]
        return w

    def describe(self) -> dict:
        return {"name": self.name, "algo": self.algo, "source": self.source, "version": self.version,
                "symbols": list(self.spec.symbols) if self._loaded else None,
                "spec": asdict(self.spec) if self._loaded else None}
