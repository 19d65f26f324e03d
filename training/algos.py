"""RLlib algorithm configs (new API stack only: RLModule, Learner, EnvRunner) for the trading env.

* DQN with double Q, dueling heads, n-step returns and prioritised replay as switches.
* APPO, the asynchronous actor-critic family. RLlib removed A3C (and ships no replacement under
  that name); APPO/IMPALA is its asynchronous successor: env runners sample in parallel with
  the learner, and V-trace corrects for the policy lag.

Presets size the run for the machine (see shared/RAY_NOTES.md for the measurements):
* "smoke"  – seconds per iteration; used by tests and `trader train --smoke`.
* "2core"  – a 2-CPU laptop/CI box: DQN and APPO sample in the driver with vectorised envs and a
             local learner (RLlib's per-step bookkeeping dominates with remote runners; APPO's
             default 2 runners + learner actor hang on 2 CPUs). Both are reproducible per seed
             (APPO through training/appo_learner.py's synchronous learner).
* "cluster" – env runners in parallel actors (DQN 2, APPO 4) for a real cluster (APPO's remote
             runners sample while it learns: not bit-identical between reruns).
"""
from __future__ import annotations

from typing import Any

import numpy as np

ALGOS = ("dqn", "appo")

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "dqn": dict(num_env_runners=0, num_envs_per_env_runner=4, rollout_fragment_length=16,
                    learning_starts=100, min_sample_timesteps=200, train_batch_size=32,
                    replay_capacity=5_000, training_intensity=None),
        "appo": dict(num_env_runners=0, num_envs_per_env_runner=2, rollout_fragment_length=50,
                     train_batch_size=200, min_sample_timesteps=200),
    },
    "2core": {
        "dqn": dict(num_env_runners=0, num_envs_per_env_runner=8, rollout_fragment_length=16,
                    learning_starts=500, min_sample_timesteps=1000, train_batch_size=64,
                    replay_capacity=50_000, training_intensity=None),
        # sampling in the driver too: one remote runner was slower here (797 vs 1278 env steps/s,
        # 15 iterations of this config) and added its own timing to the learner thread's
        "appo": dict(num_env_runners=0, num_envs_per_env_runner=4, rollout_fragment_length=50,
                     train_batch_size=500, min_sample_timesteps=1000),
    },
    "cluster": {
        "dqn": dict(num_env_runners=2, num_envs_per_env_runner=8, rollout_fragment_length=32,
                    learning_starts=1000, min_sample_timesteps=2000, train_batch_size=64,
                    replay_capacity=100_000, training_intensity=None),
        "appo": dict(num_env_runners=4, num_envs_per_env_runner=4, rollout_fragment_length=50,
                     train_batch_size=1000, min_sample_timesteps=2000),
    },
}

# Hyper-parameters a search may set, with the values used when it does not.
DEFAULTS: dict[str, dict[str, Any]] = {
    "dqn": dict(lr=5e-4, gamma=0.97, hidden=64, layers=2, epsilon_final=0.05, epsilon_steps=5_000,
                n_step=3, double_q=True, dueling=True, prioritized=True, target_update=500),
    "appo": dict(lr=3e-4, gamma=0.97, hidden=64, layers=2, entropy_coeff=0.01, clip_param=0.2,
                 vf_loss_coeff=0.5, lambda_=0.95),
}


def hyperparams(algo: str, params: dict | None = None) -> dict[str, Any]:
    """Defaults overlaid with `params` (unknown keys are an error, so typos do not go unseen)."""
    check_algo(algo)
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULTS[algo]))
    if unknown:
        raise ValueError(f"unknown {algo} hyper-parameters {unknown}; known: {sorted(DEFAULTS[algo])}")
    return {**DEFAULTS[algo], **params}


def check_algo(algo: str) -> str:
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; choose from {', '.join(ALGOS)} "
                         "(A3C no longer exists in RLlib; APPO is its asynchronous successor)")
    return algo


def build_config(algo: str, env_config: dict, params: dict | None = None, preset: str = "2core",
                 seed: int = 0, vector_env: bool = True, env_id: str | None = None):
    """An RLlib AlgorithmConfig (new API stack) for `algo` on TradingEnv with `env_config`.

    `vector_env`: each env runner steps its `num_envs_per_env_runner` episodes as one
    VecTradingEnv (training/vec_env.py: the same episodes, fills and rewards as TradingEnv, one
    batched accounting call per step); False gives RLlib's own SyncVectorEnv of TradingEnvs.
    `env_id`: another registered vector env instead (training/exposure.py's ExposureEnv).
    """
    import gymnasium as gym
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from training.env import TradingEnv
    from training.vec_env import VECTOR_ENV_ID, register_vector_env

    check_algo(algo)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    hp = hyperparams(algo, params)
    ps = PRESETS[preset][algo]
    hidden = [int(hp["hidden"])] * int(hp["layers"])

    if algo == "dqn":
        from ray.rllib.algorithms.dqn import DQNConfig

        n_step = int(hp["n_step"])
        fragment = max(int(ps["rollout_fragment_length"]), n_step)  # RLlib needs fragment >= n_step
        # RLlib's own buffers sample from unseeded generators (same seed, different policy);
        # training/replay.py's take the run's seed
        buffer = ({"type": "training.replay.SeededPrioritizedEpisodeReplayBuffer",
                   "capacity": ps["replay_capacity"], "alpha": 0.6, "beta": 0.4, "seed": int(seed)}
                  if hp["prioritized"]
                  else {"type": "training.replay.SeededEpisodeReplayBuffer", "capacity": ps["replay_capacity"],
                        "seed": int(seed)})
        cfg = (
            DQNConfig()
            .training(lr=float(hp["lr"]), gamma=float(hp["gamma"]), double_q=bool(hp["double_q"]),
                      dueling=bool(hp["dueling"]), n_step=n_step, replay_buffer_config=buffer,
                      epsilon=[(0, 1.0), (int(hp["epsilon_steps"]), float(hp["epsilon_final"]))],
                      num_steps_sampled_before_learning_starts=int(ps["learning_starts"]),
                      target_network_update_freq=int(hp["target_update"]),
                      train_batch_size=int(ps["train_batch_size"]),
                      training_intensity=ps["training_intensity"])
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=hidden, fcnet_activation="relu",
                                                       head_fcnet_hiddens=[int(hp["hidden"])]))
        )
    else:
        from ray.rllib.algorithms.appo import APPOConfig

        from training.appo_learner import SyncAPPOTorchLearner

        fragment = int(ps["rollout_fragment_length"])
        cfg = (
            APPOConfig()
            .training(lr=float(hp["lr"]), gamma=float(hp["gamma"]), entropy_coeff=float(hp["entropy_coeff"]),
                      clip_param=float(hp["clip_param"]), vf_loss_coeff=float(hp["vf_loss_coeff"]),
                      lambda_=float(hp["lambda_"]), train_batch_size_per_learner=int(ps["train_batch_size"]),
                      use_circular_buffer=False)
            # a learner actor beside the runners hangs build_algo() on 2 CPUs; the learner learns each
            # batch before update() returns: the same seed, the same policy (training/appo_learner.py
            # says why RLlib's threaded learner does not)
            .learners(num_learners=0, learner_class=SyncAPPOTorchLearner)
            .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=hidden, fcnet_activation="tanh",
                                                       vf_share_layers=False))
        )
    if env_id is None and vector_env:
        register_vector_env()
    env = env_id or (VECTOR_ENV_ID if vector_env else TradingEnv)
    vectorize = gym.VectorizeMode.VECTOR_ENTRY_POINT if (env_id or vector_env) else gym.VectorizeMode.SYNC
    cfg = (
        cfg.api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .framework("torch")
        .environment(env, env_config=env_config)
        .env_runners(num_env_runners=int(ps["num_env_runners"]),
                     num_envs_per_env_runner=int(ps["num_envs_per_env_runner"]),
                     rollout_fragment_length=fragment,
                     # the env runner calls make_trading_env(config | {"num_envs": n}) itself
                     gym_env_vectorize_mode=vectorize)
        .reporting(min_sample_timesteps_per_iteration=int(ps["min_sample_timesteps"]),
                   min_time_s_per_iteration=None)  # IMPALA/APPO default forces >= 10 s an iteration
        .debugging(seed=int(seed), log_level="ERROR")
    )
    return cfg


def greedy_actions(module):
    """obs (n, n_obs) → actions (n,) with no exploration: DQN's argmax Q, APPO's most likely action."""
    import torch
    from ray.rllib.core.columns import Columns

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module.forward_inference({Columns.OBS: torch.as_tensor(np.asarray(obs, dtype=np.float32))})
        if Columns.ACTIONS in out:
            return np.asarray(out[Columns.ACTIONS]).reshape(-1)
        return torch.argmax(out[Columns.ACTION_DIST_INPUTS], dim=-1).numpy()

    return act


def greedy_policy(module):
    """obs → action with no exploration (one observation: `greedy_actions` on a batch of one)."""
    act = greedy_actions(module)
    return lambda obs: int(act(np.asarray(obs)[None])[0])


def learner_module(algo) -> Any:
    """The trained RLModule from the (local) learner: always the freshest weights."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    lg = algo.learner_group
    if lg.is_local:
        return lg._learner.module[DEFAULT_MODULE_ID]
    return algo.get_module(DEFAULT_MODULE_ID)


def save_module(algo, path) -> str:
    """Save only the RLModule (what serving needs) to `path`; returns the path."""
    module = learner_module(algo)
    module.save_to_path(str(path))
    return str(path)


def load_module(path):
    from ray.rllib.core.rl_module.rl_module import RLModule

    return RLModule.from_checkpoint(str(path))
