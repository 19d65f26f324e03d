"""Replay buffers whose sampling is seeded.

RLlib 2.60's `EpisodeReplayBuffer.__init__` draws its sampler from fresh OS entropy
(`self.rng = np.random.default_rng(seed=None)`, ray/rllib/utils/replay_buffers/
episode_replay_buffer.py) and `config.debugging(seed=...)` never reaches it. So two DQN trainings
with the same seed replay different minibatches and end with different policies — what made
`trader check-lookahead dqn` report a leak: the full and the truncated run train the same model
on the same rows and still decide differently. These subclasses take the seed from the
replay-buffer config (`training.algos.build_config` puts it there).

The class names keep "EpisodeReplayBuffer" in them: RLlib decides from that substring of the
configured type whether a buffer is a new-API-stack one.
"""
from __future__ import annotations

import numpy as np
from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer
from ray.rllib.utils.replay_buffers.prioritized_episode_buffer import (
    PrioritizedEpisodeReplayBuffer,
)


class SeededEpisodeReplayBuffer(EpisodeReplayBuffer):
    def __init__(self, capacity: int = 10000, *, seed: int | None = None, **kwargs):
        super().__init__(capacity, **kwargs)
        self.rng = np.random.default_rng(seed)


class SeededPrioritizedEpisodeReplayBuffer(PrioritizedEpisodeReplayBuffer):
    def __init__(self, capacity: int = 10000, *, seed: int | None = None, **kwargs):
        super().__init__(capacity, **kwargs)
        self.rng = np.random.default_rng(seed)
