"""The torch Policy runtime: a trained run (or checkpoint folder) that acts, one observation at a time.

``Policy.load(RUN)`` reads ``config.yaml``, ``model.safetensors`` (EMA weights),
``normalizer.safetensors`` and, for language goals, ``goals.safetensors`` from one checkpoint (no
pickle). ``reset(instruction)`` starts an episode and picks the goal (an instruction without a stored
embedding is embedded with the offline sentence encoder when the policy's embeddings came from it
and the `lang` extra is installed, see :func:`dp.data.language.embed_new_instruction`); ``select_action(obs)`` takes one
raw observation (key -> array without time axis; images uint8 HxWxC), keeps the observation history
(the first observation repeated to fill it, as in training) and an action queue refilled every
``n_action_steps`` from a freshly sampled chunk; ``predict_chunk(obs)`` returns the whole (H, A) chunk.
``rti=True`` (or an :class:`~dp.infer.rti.RTISettings`) warm-starts every chunk after the first from
the previous one (:mod:`dp.infer.rti`); ``reset()`` clears that guess. The model's own normaliser
(:class:`dp.models.normalization.Normalization`) maps observations in and actions out. Experts are
cached (:mod:`dp.infer.caching`, as in the ONNX export) unless ``cache_experts=False``: the same chunks
as the routed model to within 1e-5, with only the chosen experts' weights run.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall on a busy machine

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dp.config import Config
from dp.data.normalize import Normalizer
from dp.errors import DpError
from dp.infer.caching import CachedSampler, ExpertBank
from dp.infer.chunked_runtime import ChunkedRuntime
from dp.infer.rti import RTISettings, warm_sample
from dp.infer.rti_guess import snap_discrete
from dp.models import checkpoint_files as ckpt
from dp.models.diffusion_policy import DiffusionPolicy


SAMPLER_KEYS = ("schedule", "solver", "rho", "trim", "steps")  # the diffusion.* settings Policy.load(sampler=...) overrides


class Policy(ChunkedRuntime):
    """A MoDE policy in torch (eval mode, EMA weights). Same API as the ONNX Runtime policy."""

    def __init__(
        self,
        model: DiffusionPolicy,
        normalizer: Normalizer,
        goals: dict[str, np.ndarray] | None = None,
        n_action_steps: int | None = None,
        steps: int | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        rti: bool | RTISettings = False,
        cache_experts: bool = True,
        task_action_steps: dict[str, int] | None = None,
    ):
        model.set_normalizer(normalizer)
        self.model = model.to(device).eval()
        self.cfg: Config = model.cfg
        self.normalizer = normalizer  # its statistics (the export describes them); the model applies them
        self.goals = dict(goals or {})  # the embeddings it was trained with (exported with it)
        self.goal_kind, self.lang_encoder = self.cfg.model.goal, self.cfg.vocab.lang_encoder
        self.device = torch.device(device)
        data = self.cfg.data
        self.lowdim_keys, self.image_keys = list(data.lowdim_keys), list(data.image_keys)
        self.obs_keys = [*self.lowdim_keys, *self.image_keys]
        self.shapes = data.shapes
        self.pad_lowdim = data.pad_lowdim
        self.action_key = data.action_key
        self.obs_horizon, self.action_horizon, self.action_dim = data.obs_horizon, data.action_horizon, data.action_dim
        self.steps = steps or self.cfg.diffusion.steps
        self.tasks = list(self.cfg.vocab.tasks)
        self.instructions = dict(self.cfg.vocab.instructions)
        self.discrete_dims = list(normalizer.discrete_dims.get(self.action_key, []))
        self.discrete_levels = normalizer.discrete_levels(self.action_key)
        self.rti = RTISettings() if rti is True else (rti or None)
        self._rti_sigmas = self.rti.for_model(self.model, self.steps) if self.rti else None
        self.cache_experts = cache_experts
        self._samplers: dict[str, CachedSampler] = {}  # built on first use: "full", "warm"
        self._start(n_action_steps, seed, own=self.rti.every if self.rti else data.n_action_steps, stored=data.task_action_steps,
                    task_action_steps=task_action_steps)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", n_action_steps: int | None = None, steps: int | None = None, seed: int = 0, rti: bool | RTISettings = False,
             cache_experts: bool = True, sampler: dict[str, Any] | None = None, task_action_steps: dict[str, int] | None = None) -> Policy:
        """Load a run folder (its latest checkpoint) or a checkpoint folder. ``sampler`` overrides the
        run's sampler settings (``diffusion.schedule``, ``solver``, ``rho``, ``trim``, ``steps``);
        ``task_action_steps`` its per-task re-planning intervals (``data.task_action_steps``), and
        ``n_action_steps`` its interval for every task."""
        folder = ckpt.resolve_checkpoint(path)
        ckpt.verify_checkpoint(folder)  # damaged weights never reach eval, export or a robot
        cfg = ckpt.load_checkpoint_config(folder)
        unknown = sorted(set(sampler or {}) - set(SAMPLER_KEYS))
        if unknown:
            raise DpError(f"sampler settings {unknown} unknown (known: {', '.join(SAMPLER_KEYS)})")
        cfg.diffusion = dataclasses.replace(cfg.diffusion, **{k: v for k, v in (sampler or {}).items() if v is not None})
        try:
            model = DiffusionPolicy(cfg)
        except (ValueError, KeyError) as exc:
            raise DpError(f"{folder / ckpt.CONFIG_FILE}: cannot build the model from this configuration ({exc})") from exc
        ckpt.load_checked_state(model, ckpt.load_weights(folder / ckpt.MODEL_FILE), str(folder / ckpt.MODEL_FILE), cfg)
        normalizer = Normalizer.load(folder / ckpt.NORMALIZER_FILE)
        goals = ckpt.load_goals(folder / ckpt.GOALS_FILE) if (folder / ckpt.GOALS_FILE).is_file() else None
        if cfg.model.goal == "lang" and not goals:
            raise DpError(f"{folder}: a language-conditioned policy without {ckpt.GOALS_FILE}")
        return cls(model, normalizer, goals, n_action_steps=n_action_steps, steps=steps, device=device, seed=seed, rti=rti, cache_experts=cache_experts,
                   task_action_steps=task_action_steps)

    @property
    def lang_dim(self) -> int:
        return int(self.cfg.model.lang_dim)

    def _full_sampler(self) -> dict[str, Any]:
        return {"solver": self.cfg.diffusion.solver, "schedule": self.cfg.diffusion.schedule, "steps": int(self.steps)}

    def _goal_input(self, goal: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v).to(self.device) for k, v in goal.items()}

    def _sampler(self, name: str) -> CachedSampler | None:
        """The cached sampler of the full or the warm schedule (None without expert caching)."""
        if not self.cache_experts:
            return None
        if name not in self._samplers:
            bank = next(iter(self._samplers.values())).bank if self._samplers else ExpertBank(self.model)
            sigmas = self.model.schedule(self.steps) if name == "full" else self._rti_sigmas
            self._samplers[name] = CachedSampler(self.model, sigmas, bank).eval()
        return self._samplers[name]

    # ------------------------------------------------------------------ acting
    def _guess(self) -> np.ndarray | None:
        """The warm start's guess; with ``RTISettings.guess == "zero"`` the middle of the action range."""
        guess = super()._guess()
        if guess is not None and self.rti.guess == "zero":
            return self.normalizer.unnormalize(self.action_key, np.zeros_like(guess)).astype(np.float32)
        return guess

    @torch.no_grad()
    def _sample_chunks(self, noise: np.ndarray, window: dict[str, np.ndarray], goal: dict[str, torch.Tensor],
                       guess: np.ndarray | None) -> np.ndarray:
        noise_t = torch.from_numpy(noise).to(self.device)
        cond = self.model.encode(self.model.observation_batch(window), **goal).expand(len(noise), -1, -1)  # one encoding for every row
        if guess is not None:  # RTI: warm start from the previous chunk
            guess_t = self.model.normalize_action(torch.from_numpy(guess[None]).to(self.device))
            chunks = warm_sample(self.model, cond, guess_t, noise_t, self._rti_sigmas, self._sampler("warm"))
        else:
            chunks = self.model.sample_encoded(cond, noise_t, steps=self.steps, sampler=self._sampler("full"))
        chunks = self.model.unnormalize_action(chunks.float()).cpu().numpy().astype(np.float32)
        return snap_discrete(chunks, self.discrete_dims, self.discrete_levels)
