"""``ModeConfig``: dp's MoDE policy as LeRobot policy type ``mode``.

The network, diffusion and training settings are a dp preset plus dp overrides (``preset``,
``overrides``: ``section.key=value`` strings, as ``dp train`` takes them), checked when the config
is built: an unknown preset or override fails here, before any data is read. The chunk sizes are
the preset's unless set. Optimiser and schedule mirror dp's trainer (AdamW without decay on vectors
and position tables, linear warmup then ``train.lr_schedule``, ``train.grad_clip``).

``key_map``, ``tasks``, ``discrete_dims`` and ``dp_stats`` are what the first build learned from the
dataset (``lerobot_policy_mode.bridge``); they are saved in ``config.json`` so that a trained policy
rebuilds the same dp model without the dataset, and converts back to dp exactly.
"""

from dataclasses import dataclass, field

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType, NormalizationMode
from lerobot.optim.optimizers import AdamWConfig
from lerobot.optim.schedulers import DiffuserSchedulerConfig

from dp.config import Config, build_config
from dp.errors import DpError
from dp.infer.rti import RTISettings
from dp.infer.rti_guess import DEFAULT_RTI_EVERY, DEFAULT_RTI_SIGMA, DEFAULT_RTI_STEPS
from dp.train.lr_schedule import LR_SCHEDULES


@PreTrainedConfig.register_subclass("mode")
@dataclass
class ModeConfig(PreTrainedConfig):
    """dp preset + overrides, LeRobot's chunking fields, dp's inference fast path, and the dataset's key map."""

    preset: str = "pusht"
    overrides: list[str] = field(default_factory=list)
    # Chunking (None: the preset's data.obs_horizon, data.action_horizon, data.n_action_steps).
    n_obs_steps: int | None = None
    horizon: int | None = None
    n_action_steps: int | None = None
    # dp normalises low-dim keys and actions min-max to [-1, 1]; its vision encoder takes raw pixels.
    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.MIN_MAX,
            "ENV": NormalizationMode.MIN_MAX,
            "ACTION": NormalizationMode.MIN_MAX,
        }
    )
    # Inference: cached experts (dp.infer.caching) and RTI warm starts (dp.infer.rti).
    cache_experts: bool = True
    rti: bool = False
    rti_steps: int = DEFAULT_RTI_STEPS
    rti_sigma: float = DEFAULT_RTI_SIGMA
    rti_every: int = DEFAULT_RTI_EVERY
    # Learned from the dataset at the first build (saved with the policy).
    key_map: dict[str, str] = field(default_factory=dict)  # dp key -> LeRobot feature, e.g. "observation.state[0:2]"
    tasks: list[str] = field(default_factory=list)  # dp's task vocabulary (LeRobot's task strings)
    discrete_dims: dict[str, list[int]] = field(default_factory=dict)  # dp key -> two-level dimensions
    dp_stats: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # dp key -> min, max, mean, std, count
    push_to_hub: bool = False  # local by default; set it with policy.repo_id to upload

    def __post_init__(self):
        super().__post_init__()
        data = self._base_config().data
        self.n_obs_steps = self.n_obs_steps or data.obs_horizon
        self.horizon = self.horizon or data.action_horizon
        self.n_action_steps = self.n_action_steps or data.n_action_steps
        if not 1 <= self.n_action_steps <= self.horizon:
            raise ValueError(f"policy.n_action_steps must be in [1, horizon={self.horizon}], got {self.n_action_steps}")
        diffusion = self.dp_config().diffusion
        if self.rti:
            if not 1 <= self.rti_every <= self.horizon:
                raise ValueError(f"policy.rti_every must be in [1, horizon={self.horizon}], got {self.rti_every}")
            try:
                RTISettings(self.rti_steps, self.rti_sigma, self.rti_every).sigmas(diffusion.sigma_min, diffusion.sigma_max, diffusion.steps)
            except DpError as exc:
                raise ValueError(f"policy (type mode): {exc}") from None

    def _base_config(self, extra: list[str] | None = None) -> Config:
        try:
            return build_config(self.preset, [*self.overrides, *(extra or [])])
        except DpError as exc:
            raise ValueError(f"policy (type mode): {exc}") from None

    def dp_config(self) -> Config:
        """dp's configuration of this policy before the dataset fills in keys, shapes and tasks."""
        return self._base_config([f"data.obs_horizon={self.n_obs_steps}", f"data.action_horizon={self.horizon}",
                                  f"data.n_action_steps={self.n_action_steps}"])

    def get_optimizer_preset(self) -> AdamWConfig:
        train = self.dp_config().train
        clip = train.grad_clip if train.grad_clip > 0 else float("inf")
        return AdamWConfig(lr=train.lr, betas=tuple(train.betas), weight_decay=train.weight_decay, grad_clip_norm=clip)

    def get_scheduler_preset(self) -> DiffuserSchedulerConfig:
        train = self.dp_config().train
        if train.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {train.lr_schedule!r}")
        return DiffuserSchedulerConfig(name=LR_SCHEDULES[train.lr_schedule], num_warmup_steps=train.warmup_steps)

    def validate_features(self) -> None:
        action = (self.output_features or {}).get("action")
        if action is None or action.type is not FeatureType.ACTION or len(action.shape) != 1:
            raise ValueError(f"policy (type mode): needs an 'action' output feature of one vector per frame; got {self.output_features}")
        if not self.input_features:
            raise ValueError("policy (type mode): no input features (observation.*) to condition on")

    @property
    def observation_delta_indices(self) -> list[int]:
        return list(range(1 - self.n_obs_steps, 1))

    @property
    def action_delta_indices(self) -> list[int]:
        """dp's windows: the chunk starts at the current step (LeRobot's diffusion starts it at the oldest observation)."""
        return list(range(self.horizon))

    @property
    def reward_delta_indices(self) -> None:
        return None
