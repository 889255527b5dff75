"""``ModePolicy``: dp's :class:`~dp.models.diffusion_policy.DiffusionPolicy` behind LeRobot's policy API.

One model, two front doors: ``self.model`` is dp's own module, built from the dp configuration
:func:`lerobot_policy_mode.bridge.run_config` resolves; ``forward`` maps LeRobot's batch to dp's and
returns dp's ``compute_loss``. ``self.ema`` holds the exponential moving average of its weights, as
``dp train`` keeps it (diffusers' ``EMAModel`` with ``train.ema_decay`` and ``train.ema_power``,
stepped by LeRobot's ``update`` hook after each optimiser step); actions are sampled from it with
dp's fast path: cached experts (:class:`dp.infer.caching.CachedSampler`) and, with ``rti``, warm
starts from the previous chunk (:func:`dp.infer.rti.warm_sample`).

Batches: after LeRobot's preprocessor low-dim features and actions are min-max normalised to
[-1, 1] (dp's map, :mod:`lerobot_policy_mode.processor_mode`) and cameras are float (C, H, W) in
0..1. dp's vision encoder takes (H, W, C) pixels in 0..255 of any dtype; the camera frames are
rounded back to uint8 (a permuted view, one small copy) so that dp's encoder sees exactly the bytes
``dp eval`` and ``dp node`` give it.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

import numpy as np
import torch
from diffusers.training_utils import EMAModel
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.policies.utils import populate_queues
from torch import Tensor

from dp.infer.caching import CachedSampler, ExpertBank
from dp.infer.rti import RTISettings, warm_sample
from dp.infer.rti_guess import shift_guess, snap_discrete
from dp.models.diffusion_policy import DiffusionPolicy
from dp.train.trainer import param_groups
from lerobot_policy_mode import bridge
from lerobot_policy_mode.configuration_mode import ModeConfig


def learn_from_dataset(config: ModeConfig, meta: Any = None, stats: dict[str, dict[str, Any]] | None = None) -> None:
    """Fill the config's key map, tasks and dp statistics from the dataset (first build), check the
    features against the key map (a clear error naming missing ones), keep only the features it reads."""
    features = {**(config.input_features or {}), **(config.output_features or {})}
    if not config.key_map:
        card = bridge.read_card(getattr(meta, "root", None))
        config.key_map, config.discrete_dims = bridge.resolve_key_map(config.dp_config(), features, card)
        config.tasks = config.tasks or bridge.tasks_of(meta)
    bridge.check_features(config.key_map, features)
    read = {ref.field for ref in bridge.parse_key_map(config.key_map).values()}
    config.input_features = {k: v for k, v in config.input_features.items() if k in read}
    if stats is not None:
        config.dp_stats = bridge.split_stats(stats, config.key_map)


class ModePolicy(PreTrainedPolicy):
    """dp's MoDE diffusion policy (EDM, noise-routed experts) as a LeRobot policy."""

    config_class = ModeConfig
    name = "mode"

    def __init__(self, config: ModeConfig, dataset_stats: dict[str, dict[str, Any]] | None = None, dataset_meta: Any = None, **kwargs: Any):
        """``dataset_stats`` and ``dataset_meta``: what LeRobot's ``make_policy`` passes from a dataset (the
        first build learns the key map from them); other keyword arguments LeRobot passes are not used."""
        super().__init__(config)
        config.validate_features()
        learn_from_dataset(config, dataset_meta, dataset_stats)
        features = {**config.input_features, **config.output_features}
        self.dp_cfg = bridge.run_config(config.dp_config(), config.key_map, features, config.tasks)
        self.refs = bridge.parse_key_map(config.key_map)
        self.model = DiffusionPolicy(self.dp_cfg)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        train = self.dp_cfg.train
        self._ema = EMAModel([], decay=train.ema_decay, use_ema_warmup=True, power=train.ema_power, foreach=True)  # its rule; the average is self.ema
        action = self.dp_cfg.data.action_key
        self.action_discrete = list(config.discrete_dims.get(action, []))
        self.every = config.rti_every if config.rti else config.n_action_steps
        self.rti = RTISettings(config.rti_steps, config.rti_sigma, config.rti_every) if config.rti else None
        self._samplers: dict[str, CachedSampler] = {}
        self.register_load_state_dict_post_hook(lambda module, _: module._samplers.clear())
        self.reset()

    # ------------------------------------------------------------------ training
    def get_optim_params(self) -> list[dict[str, Any]]:
        return param_groups(self.model, self.dp_cfg.train.weight_decay)

    def dp_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """LeRobot's (preprocessed) batch -> dp's: ``{"obs": {key: (B, To, ...)}, "action", "task_id"}``."""
        obs = {}
        for key in [*self.dp_cfg.data.lowdim_keys, *self.dp_cfg.data.image_keys]:
            ref = self.refs[key]
            value = batch[ref.field]
            if key in self.dp_cfg.data.image_keys:
                value = value if value.ndim == 5 else value[:, None]
                obs[key] = value.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2)
            else:
                value = value if value.ndim == 3 else value[:, None]
                obs[key] = value[..., ref.start:ref.stop] if ref.sliced else value
        out: dict[str, Any] = {"obs": obs}
        if self.dp_cfg.data.action_key in self.refs and "action" in batch:
            out["action"] = batch["action"]
        if self.dp_cfg.model.goal == "task":
            first = next(iter(obs.values()))
            out["task_id"] = self._task_ids(batch.get("task"), first.shape[0], first.device)
        return out

    def _task_ids(self, tasks: Any, batch: int, device: torch.device) -> Tensor:
        if len(self.config.tasks) <= 1:
            return torch.zeros(batch, dtype=torch.long, device=device)
        if tasks is None:
            raise ValueError(f"this policy was trained on several tasks; the batch needs 'task' (one of {self.config.tasks})")
        names = [tasks] * batch if isinstance(tasks, str) else list(tasks)
        unknown = sorted(set(names) - set(self.config.tasks))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; this policy knows: {self.config.tasks}")
        return torch.tensor([self.config.tasks.index(t) for t in names], dtype=torch.long, device=device)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """dp's training loss (EDM denoising + router losses) of LeRobot's batch, and its parts."""
        loss, parts = self.model.compute_loss(self.dp_batch(batch))
        return loss, {k: float(v) for k, v in parts.items()}

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step (LeRobot calls this after every optimiser step), as dp's trainer takes it."""
        self.ema_steps += 1
        self._ema.optimization_step = int(self.ema_steps) - 1
        self._ema.shadow_params = list(self.ema.parameters())  # averaged in place: saved with the policy
        self._ema.step(self.model.parameters())
        self._samplers.clear()

    def train(self, mode: bool = True) -> ModePolicy:
        super().train(mode)
        self.ema.eval()
        self._samplers.clear()
        return self

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> ModePolicy:
        self._samplers = {}  # built for the old device or dtype
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------ acting
    def reset(self) -> None:
        """Start an episode: clear the observation history, the action queue and the RTI guess."""
        self._history = {ref.field: deque(maxlen=self.config.n_obs_steps) for key, ref in self.refs.items() if key != self.dp_cfg.data.action_key}
        self._actions: deque[Tensor] = deque()
        self._previous: Tensor | None = None

    def _sampler(self, name: str) -> CachedSampler | None:
        """The cached sampler of the full schedule or of RTI's warm tail (None without expert caching)."""
        if not self.config.cache_experts:
            return None
        if name not in self._samplers:
            bank = next(iter(self._samplers.values())).bank if self._samplers else ExpertBank(self.ema)
            self._samplers[name] = CachedSampler(self.ema, self._schedule(name), bank).eval()
        return self._samplers[name]

    def _schedule(self, name: str) -> Tensor:
        return self.ema.schedule() if name == "full" else self.rti.for_model(self.ema)

    def _guess(self) -> Tensor | None:
        """Under RTI, the previous chunk advanced by the actions executed from it (normalised: discrete at -1/+1)."""
        if self.rti is None or self._previous is None:
            return None
        rows = [shift_guess(row, self.every, self.action_discrete) for row in self._previous.float().cpu().numpy()]
        return torch.from_numpy(np.stack(rows)).to(self._previous.device)

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], noise: Tensor | None = None) -> Tensor:
        """Add the observation to the history; a normalised chunk (B, horizon, A) sampled from it (from
        ``noise`` (B, horizon, A) when given), warm-started from the previous chunk under RTI."""
        populate_queues(self._history, batch)
        window = {field: torch.stack(list(queue), dim=1) for field, queue in self._history.items()}
        dp = self.dp_batch({**window, "task": batch.get("task")})
        cond = self.ema.encode(dp["obs"], dp.get("task_id"))
        shape = (cond.shape[0], self.config.horizon, self.dp_cfg.data.action_dim)
        noise = torch.randn(shape, device=cond.device) if noise is None else noise.to(cond.device)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        guess = self._guess()
        if guess is not None and guess.shape[0] == shape[0]:
            chunk = warm_sample(self.ema, cond, guess, noise, self._schedule("warm"), self._sampler("warm"))
        else:
            chunk = self.ema.sample_encoded(cond, noise, sampler=self._sampler("full"))
        if self.action_discrete:
            chunk = torch.from_numpy(snap_discrete(chunk.float().cpu().numpy(), self.action_discrete)).to(cond.device)
        self._previous = chunk
        return chunk

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], noise: Tensor | None = None) -> Tensor:
        """The next normalised action (B, A): a new chunk every ``n_action_steps`` (``rti_every`` under RTI)."""
        if self._actions:
            populate_queues(self._history, batch)
        else:
            chunk = self.predict_action_chunk(batch, noise)
            self._actions.extend(chunk[:, : self.every].transpose(0, 1))
        return self._actions.popleft()
