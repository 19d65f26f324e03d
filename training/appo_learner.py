"""APPO's learner, updated in the calling thread: the same seed gives the same policy.

RLlib 2.60's `IMPALALearner.update` (APPO's base) only enqueues each train batch for a background
`_LearnerThread` and returns whatever weights that thread has published by then; with the default
`CircularBuffer` the thread also replays batches drawn by an unseeded generator, and a batch can be
dropped before it was learned. Which weights the env runners sample with next — and so the whole
training run — then depends on thread timing: two trainings with one seed differed under load
(issue 12), and `trader check-lookahead appo` read that noise as a leak.

`SyncAPPOTorchLearner` keeps APPO's loss, target networks and KL / entropy schedules (it is an
`APPOTorchLearner`) but learns each batch before `update` returns and hands back the weights it
has just produced. The algorithm is configured with a plain queue instead of the circular buffer
(`use_circular_buffer=False`), so the background thread RLlib still starts blocks on an empty
queue and takes no CPU. What is given up is the overlap of sampling and learning on one machine;
bench/rl_env_steps.py is not affected, and the 2core preset measured in docs/rl.md shows the cost.
"""
from __future__ import annotations

from typing import Any

import ray
import torch
from ray.rllib.algorithms.appo.torch.appo_torch_learner import APPOTorchLearner
from ray.rllib.core import COMPONENT_RL_MODULE
from ray.rllib.core.learner.learner import Learner
from ray.rllib.core.learner.training_data import TrainingData


class SyncAPPOTorchLearner(APPOTorchLearner):
    """APPO's learner without the learner thread: `update` learns the batch, then returns."""

    def update(self, training_data: TrainingData, *, timesteps: dict[str, Any], return_state: bool = False,
               **kwargs) -> dict:
        training_data.solve_refs()
        batch = self._make_batch_if_necessary(training_data=training_data)
        with self._model_io_lock:  # the lock IMPALA's thread holds while it reads the weights
            result = Learner.update(self, training_data=TrainingData(batch=batch), timesteps=timesteps, **kwargs)
            if return_state:
                with torch.inference_mode():
                    state = self.get_state(
                        components=[f"{COMPONENT_RL_MODULE}/{mid}" for mid in self.module.keys()
                                    if self.should_module_be_updated(mid)],
                        inference_only=True)
                state[COMPONENT_RL_MODULE] = ray.put(state[COMPONENT_RL_MODULE])
                result["_rl_module_state_after_update"] = state
        return result
