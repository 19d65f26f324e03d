"""Which agents the decision service runs, decided in the driver at deploy time.

The configured agents (`serve.agents`, by default the ensemble's members) always run. The agents that load
a registered model — the RL agents (dqn, appo) and the lgbm forecaster — join them:
  * when listed in the agents, or — with `rl_champions` on (the default) — whenever a model is
    available for them;
  * with the model from `models[algo]` (settings `serve.models`), else `KRT_MODEL_<ALGO>`, else
    `models:/agent-<algo>@champion` (`models:/forecaster-lgbm@champion`) when the configured
    MLflow registry has a champion.
An RL agent that is listed but has no model is a deploy error (it could never decide).

The registry is `MLFLOW_TRACKING_URI`, else the embedded sqlite store (runs/mlflow or
KRT_MLFLOW_DIR) if it exists: checking never creates a store. The resolved tracking URI goes to
the deployment (and so to the AgentActors it starts), so they read the same registry as the
driver did. An alias URI (`@champion`) is passed as is: the actor's `refresh()` follows a later
`trader promote` without a redeploy; the version printed here is the one at deploy time.

No Ray here: plain code, so the planning can be tested and reused by `trader demo/serve/run`.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

RL_ALGOS = ("dqn", "appo")
# the agents that load a registered model: the RL agents (agent-<algo>) and the forecasters
# (forecaster-<name>, training/forecasters.py); each joins the served agents the same way
MODEL_AGENTS = RL_ALGOS + ("lgbm",)


@dataclass
class ServedAgents:
    agents: list[str]
    models: dict[str, str] = field(default_factory=dict)  # RL agent → model URI given to its actor
    versions: dict[str, str | None] = field(default_factory=dict)  # at deploy time
    tracking_uri: str | None = None  # the registry the actors must read (None: none needed)
    notes: list[str] = field(default_factory=list)  # why an RL agent is not served

    def describe(self) -> list[str]:
        """One label per agent: `technical`, `dqn (models:/agent-dqn@champion, v3)`."""
        out = []
        for a in self.agents:
            if a in self.models:
                v = self.versions.get(a)
                out.append(f"{a} ({self.models[a]}" + (f", v{v})" if v else ")"))
            else:
                out.append(a)
        return out

    def summary(self) -> str:
        text = "decision service agents: " + ", ".join(self.describe())
        return text + "".join(f"\n  note: {n}" for n in self.notes)


@contextlib.contextmanager
def _probe_env():
    """Fail fast against an unreachable tracking server (MLflow retries for minutes by default)."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    unset = [k for k in keys if k not in os.environ]
    os.environ.update({k: keys[k] for k in unset})
    try:
        yield
    finally:
        for k in unset:
            os.environ.pop(k, None)


def plan(agents: list[str], *, rl_champions: bool = True, models: dict[str, str] | None = None,
         mlflow_dir: str | Path | None = None, environ: dict[str, str] | None = None) -> ServedAgents:
    """The agents to serve and the model each RL agent loads. ValueError for a bad configuration."""
    from training import registry as R

    env: Mapping[str, str] = os.environ if environ is None else environ
    models = {k: v for k, v in (models or {}).items() if v}
    unknown = sorted(set(models) - set(MODEL_AGENTS))
    if unknown:
        raise ValueError(f"serve.models names {unknown}: only RL agents {list(RL_ALGOS)} and forecasters "
                         f"{list(MODEL_AGENTS[len(RL_ALGOS):])} load a model")
    if not agents:
        raise ValueError("the decision service needs at least one agent")
    out = ServedAgents(agents=list(dict.fromkeys(agents)))
    tracking = R.existing_tracking_uri(mlflow_dir)
    for algo in MODEL_AGENTS:
        listed = algo in out.agents
        if not (listed or rl_champions):
            continue
        model: str | None = models.get(algo) or env.get(f"KRT_MODEL_{algo.upper()}") or None
        explicit = model is not None
        if not explicit:
            if tracking is None:
                why = "no MLflow store (MLFLOW_TRACKING_URI unset and no embedded store)"
            else:
                model = f"models:/{R.model_name(algo)}@{R.CHAMPION}"
                try:
                    with _probe_env():
                        out.versions[algo] = R.find_version(tracking, model)
                    why = None
                except LookupError:
                    why = f"no '{R.CHAMPION}' version of {R.model_name(algo)} in {tracking}"
                except Exception as exc:  # unreachable server, broken store: say so, serve the rest
                    why = f"MLflow registry at {tracking} not readable ({type(exc).__name__}: " \
                          f"{str(exc).splitlines()[0][:160] if str(exc) else ''})"
            if why is not None:
                if listed and algo not in RL_ALGOS:
                    # a forecaster decides without a model too (it fits its grid on the history)
                    out.notes.append(f"{algo} served without a registered model ({why}): it fits its own grid")
                    continue
                if listed:
                    raise ValueError(f"{algo} is in the served agents but has no model: {why}. Set "
                                     f"serve.models.{algo} (or KRT_MODEL_{algo.upper()}) or promote a champion "
                                     f"(`trader promote --algo {algo}`)")
                out.notes.append(f"{algo} not served: {why}")
                continue
        elif model is not None:
            out.versions[algo] = _explicit_version(model, tracking)
        if model is None:  # unreachable: a missing model either raised or continued above
            continue
        out.models[algo] = model
        if not listed:
            out.agents.append(algo)
    if any(m.startswith("models:/") for m in out.models.values()):
        out.tracking_uri = tracking
    return out


def _explicit_version(model: str, tracking: str | None) -> str | None:
    """Check an explicitly configured model now (a typo fails the deploy, not the first decision)."""
    from training import registry as R

    if model.startswith("models:/"):
        if tracking is None:
            raise ValueError(f"model {model} needs an MLflow registry, but there is none "
                             "(set MLFLOW_TRACKING_URI, or train and register a model first)")
        try:
            with _probe_env():
                return R.find_version(tracking, model)
        except LookupError as exc:
            raise ValueError(str(exc)) from None
    marks = ("env_spec.json", "meta.json")  # an RL agent folder, a forecaster folder (training/forecasters.py)
    if not any((Path(model) / m).exists() or (Path(model) / R.AGENT_PATH / m).exists() for m in marks):
        raise ValueError(f"model {model} is neither a models:/ URI nor an agent folder (needs env_spec.json "
                         "or meta.json)")
    return None
