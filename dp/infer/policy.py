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
the previous one (:mod:`dp.infer.rti`); ``reset()`` clears that guess.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall on a busy machine

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dp.config import Config
from dp.data.normalize import Normalizer
from dp.errors import DpError
from dp.infer.rti import RTISettings, warm_sample
from dp.infer.runtime_common import ChunkedRuntime, shift_guess, snap_discrete
from dp.models.diffusion_policy import DiffusionPolicy
from dp.train import checkpoint as ckpt


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
    ):
        self.model = model.to(device).eval()
        self.cfg: Config = model.cfg
        self.normalizer = normalizer
        self.goals = dict(goals or {})  # the embeddings it was trained with (exported with it)
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
        self.rti = RTISettings() if rti is True else (rti or None)
        self._rti_sigmas = self.rti.for_model(self.model, self.steps) if self.rti else None
        self._start(n_action_steps or (self.rti.every if self.rti else data.n_action_steps), seed)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", n_action_steps: int | None = None, steps: int | None = None, seed: int = 0, rti: bool | RTISettings = False) -> Policy:
        """Load a run folder (its latest checkpoint) or a checkpoint folder."""
        folder = ckpt.resolve_checkpoint(path)
        ckpt.verify_checkpoint(folder)  # damaged weights never reach eval, export or a robot
        cfg = ckpt.load_checkpoint_config(folder)
        try:
            model = DiffusionPolicy(cfg)
        except (ValueError, KeyError) as exc:
            raise DpError(f"{folder / ckpt.CONFIG_FILE}: cannot build the model from this configuration ({exc})") from exc
        ckpt.load_checked_state(model, ckpt.load_weights(folder / ckpt.MODEL_FILE), str(folder / ckpt.MODEL_FILE), cfg)
        normalizer = Normalizer.load(folder / ckpt.NORMALIZER_FILE)
        goals = ckpt.load_goals(folder / ckpt.GOALS_FILE) if (folder / ckpt.GOALS_FILE).is_file() else None
        if cfg.model.goal == "lang" and not goals:
            raise DpError(f"{folder}: a language-conditioned policy without {ckpt.GOALS_FILE}")
        return cls(model, normalizer, goals, n_action_steps=n_action_steps, steps=steps, device=device, seed=seed, rti=rti)

    # ------------------------------------------------------------------ episode state
    def reset(self, instruction: str | None = None) -> None:
        """Start a new episode: clear the history and the action queue, set the goal."""
        self._history.clear()
        self._queue.clear()
        self._previous = None
        self._goal = self._resolve_goal(instruction)
        self.instruction = instruction

    def _resolve_goal(self, instruction: str | None) -> dict[str, torch.Tensor]:
        kind = self.cfg.model.goal
        if kind == "none":
            return {}
        by_instruction = {v: k for k, v in self.instructions.items()}
        if kind == "task":
            if instruction is None:
                if len(self.tasks) == 1:
                    return {"task_id": torch.zeros(1, dtype=torch.long, device=self.device)}
                raise DpError(f"this policy was trained on several tasks; reset(instruction) must name one of: {self._known()}")
            task = instruction if instruction in self.tasks else by_instruction.get(instruction)
            if task is None:
                raise DpError(f"unknown instruction {instruction!r}; this policy knows: {self._known()}")
            return {"task_id": torch.tensor([self.tasks.index(task)], device=self.device)}
        # language goals: the stored embedding of the instruction (or of the task's instruction)
        key = instruction
        if key is None and len(self.goals) == 1:
            key = next(iter(self.goals))
        elif key is not None and key not in self.goals:
            key = self.instructions.get(key, key)  # a task name -> its instruction
        if key not in self.goals:
            if instruction is None:
                raise DpError(f"this policy was trained on several instructions; reset(instruction) must give one; it knows: {self._known()}")
            if instruction in self.tasks:
                raise DpError(f"no language embedding for task {instruction!r}; this policy knows: {self._known()}")
            # a new instruction: embedded as the training data was (offline sentence encoder), once
            from dp.data.language import embed_new_instruction

            if instruction not in self._encoded:
                self._encoded[instruction] = embed_new_instruction(instruction, self.cfg.vocab.lang_encoder, self.cfg.model.lang_dim, self._known())
            return {"lang_emb": torch.as_tensor(self._encoded[instruction], dtype=torch.float32, device=self.device)[None]}
        return {"lang_emb": torch.as_tensor(self.goals[key], dtype=torch.float32, device=self.device)[None]}

    def _known(self) -> str:
        names = [f"{t!r} ({self.instructions[t]!r})" if t in self.instructions else repr(t) for t in self.tasks]
        return ", ".join(names) or "none"

    def _batch(self) -> dict[str, torch.Tensor]:
        obs = {}
        for key in self.obs_keys:
            stacked = np.stack([h[key] for h in self._history])[None]  # (1, To, ...)
            if key in self.image_keys:
                obs[key] = torch.from_numpy(stacked).to(self.device)
            else:
                obs[key] = torch.from_numpy(self.normalizer.normalize(key, stacked).astype(np.float32)).to(self.device)
        return obs

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def _sample(self, noise: np.ndarray | torch.Tensor | None) -> np.ndarray:
        if self._goal is None:
            raise DpError(f"no goal set: call reset(instruction) first; this policy knows: {self._known()}")
        noise_t = torch.from_numpy(self._noise(noise)).to(self.device)
        if self.rti is not None and self._previous is not None:  # RTI: warm start from the previous chunk
            guess = self.normalizer.normalize(self.action_key, shift_guess(self._previous, self.n_action_steps, self.discrete_dims))
            cond = self.model.encode(self._batch(), **self._goal)
            chunk = warm_sample(self.model, cond, torch.from_numpy(guess[None]).to(self.device), noise_t, self._rti_sigmas)
        else:
            chunk = self.model.sample(self._batch(), noise=noise_t, steps=self.steps, **self._goal)
        chunk = self.normalizer.unnormalize(self.action_key, chunk[0].float().cpu().numpy()).astype(np.float32)
        snap_discrete(chunk, self.discrete_dims)
        self._previous = chunk.copy()
        return chunk

