"""Plugs the RL agents (dqn, appo) and the registered-model form of lgbm into the strategy
registry (strategies/registry.py).

The registry is plain Python and may not import training/ (RLlib); importing this module adds
the RL factories and the MLflow champion finder to it. Cheap to import: RLlib loads only when an
RL agent is built. Imported by the `trader` command line, the AgentActors and the tests.
"""
from __future__ import annotations

import os

from strategies import registry


def rl_agent(ctx: registry.StrategyContext, algo: str):
    """The model comes from the context, else from KRT_MODEL_<ALGO> (e.g. KRT_MODEL_DQN=
    models:/agent-dqn@champion), so any command that builds strategies by name can load one;
    with neither, the agent trains in fit() on the history before the first decision."""
    from training.policy import RLAgent

    model = ctx.model or os.environ.get(f"KRT_MODEL_{algo.upper()}") or None
    return RLAgent(model, algo=algo, seed=ctx.seed, train_iters=ctx.train_iters)


def lgbm_agent(ctx: registry.StrategyContext):
    """`lgbm` with a model (the context's, else KRT_MODEL_LGBM, e.g. models:/forecaster-lgbm@champion):
    the registered booster and the parameters its search chose (training/forecasters.py), checksum
    verified, never refitted. Without one: the strategy registry's lgbm, refitting its grid."""
    model = ctx.model or os.environ.get("KRT_MODEL_LGBM") or None
    if model is None:
        return registry.lgbm(ctx)
    from training.forecasters import RegisteredLGBM

    return RegisteredLGBM.load(registry._forecast_features(ctx), model)


def champions(ctx: registry.StrategyContext) -> dict[str, str]:
    """`models:/agent-<algo>@champion` for each RL agent the MLflow registry (MLFLOW_TRACKING_URI,
    else the embedded store if it exists) has a champion for. Checking creates no store."""
    from training import registry as R

    uri = R.existing_tracking_uri()
    if uri is None:
        return {}
    return {algo: f"models:/{R.model_name(algo)}@{R.CHAMPION}" for algo in registry.RL_ALGOS
            if R.alias_version(uri, algo, R.CHAMPION) is not None}


def _factory(algo: str):
    return lambda ctx: rl_agent(ctx, algo)


for _algo in registry.RL_ALGOS:
    registry.plug_in(_algo, _factory(_algo))
registry.plug_in("lgbm", lgbm_agent)
if champions not in registry.MODEL_FINDERS:
    registry.MODEL_FINDERS.append(champions)
