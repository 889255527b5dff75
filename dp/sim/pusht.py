"""Push-T (Chi et al., 2023) as a dp task: ``gym_pusht/PushT-v0`` (pymunk) seen through the keys of
the stores `dp import dp-zarr` makes from Diffusion Policy's demonstrations (datasets/pusht*.yaml).

Observations: ``agent_pos`` (2), ``keypoint`` (18: the block's 9 keypoints, x0 y0 x1 y1 ...),
``state`` (5: agent xy, block xy, block angle in 0..2pi) and, with the ``top`` camera, ``img``
(uint8 HxWx3). The action is the target agent position in pixels (2), 10 Hz. Diffusion Policy's
protocol: at most 300 steps; an episode scores the maximum over its steps of min(coverage / 0.95, 1)
and succeeds when its coverage reaches 0.95. Needs the optional extra: ``pip install "dp[pusht]"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dp.errors import DpError
from dp.sim.task_api import Env

SUCCESS_COVERAGE = 0.95
# The 9 keypoints in the block's frame (pixels). Diffusion Policy's data/keypoint is exactly
# R(angle) @ KEYPOINTS + block xy of data/state (fitted on all 25,650 frames of its replay buffer:
# median error 0.0006 px, 99th percentile 0.035 px); gym-pusht itself offers only the 8 corners.
KEYPOINTS = np.array([
    [9.27, 90.041], [-60.983, -1.187], [60.913, -1.393], [-0.271, 25.544], [-14.065, 122.816],
    [39.003, 32.857], [-39.966, 32.73], [-16.824, 62.863], [23.541, -1.7],
])


def keypoints(block_pose: np.ndarray) -> np.ndarray:
    """The block's 9 keypoints (9, 2) in pixels, from its pose (x, y, angle)."""
    x, y, angle = (float(v) for v in block_pose[:3])
    c, s = np.cos(angle), np.sin(angle)
    return KEYPOINTS @ np.array([[c, s], [-s, c]]) + np.array([x, y])


def episode_score(coverages: np.ndarray | list[float]) -> tuple[float, bool]:
    """Diffusion Policy's per-episode figures from the coverage after each step: the score
    max(min(coverage / 0.95, 1)) and whether the coverage reached 0.95."""
    cov = np.asarray(coverages, dtype=np.float64)
    if cov.size == 0:
        return 0.0, False
    return float(np.clip(cov / SUCCESS_COVERAGE, 0.0, 1.0).max()), bool(cov.max() >= SUCCESS_COVERAGE)


def import_gym_pusht() -> Any:
    """``gymnasium`` with ``gym_pusht`` registered, or a DpError saying how to install it."""
    try:
        import gymnasium
        import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)
    except ImportError as exc:
        raise DpError(f"task 'pusht' needs gym-pusht ({exc}); install it with: pip install \"dp[pusht]\"") from None
    return gymnasium


class PushTTask:
    """The Push-T task (the :class:`dp.sim.tasks.Task` interface)."""

    name = "pusht"
    instruction: str | None = None  # no language goal: a Push-T policy has one task
    horizon = 300
    control_freq = 10.0
    action_dim = 2
    image_size = 96
    cameras = ("top",)
    robot = "pusht"
    discrete_action_dims: tuple[int, ...] = ()  # both action values are positions
    lowdim_keys = ["agent_pos", "keypoint", "state"]

    def image_keys(self, cameras: list[str] | tuple[str, ...] | None = None) -> list[str]:
        unknown = [c for c in (cameras or []) if c not in self.cameras]
        if unknown:
            raise DpError(f"task 'pusht': unknown camera(s) {unknown} (known: top, observed as 'img')")
        return ["img" for _ in (self.cameras if cameras is None else cameras)]

    def make_env(self, cameras: list[str] | None = None, image_size: int | None = None, *,
                 offscreen: bool = False, viewer: bool = False) -> PushTEnv:
        """A new environment; ``cameras=["top"]`` adds the ``img`` observation (``image_size`` px)."""
        if viewer:
            raise DpError("task 'pusht' has no on-screen viewer here; use --video")
        return PushTEnv(self, list(cameras or []), image_size or self.image_size)


class PushTEnv(Env):
    """``gym_pusht/PushT-v0`` with the project's keys. Build it with :meth:`PushTTask.make_env`."""

    def __init__(self, spec: PushTTask, cameras: list[str], image_size: int):
        spec.image_keys(cameras)  # checks the camera names
        if image_size < 8:
            raise DpError(f"image size must be at least 8 pixels, got {image_size}")
        gym = import_gym_pusht()
        self.spec, self.cameras, self.image_size = spec, cameras, image_size
        obs_type = "pixels_agent_pos" if cameras else "state"
        self.env = gym.make("gym_pusht/PushT-v0", obs_type=obs_type, render_mode="rgb_array",
                            observation_width=image_size, observation_height=image_size).unwrapped
        self._obs: dict[str, np.ndarray] | None = None
        self.coverage = 0.0  # after the last step (0 before the first, as the protocol counts steps only)

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        """Start an episode: agent and block placed by gym-pusht's generator seeded with ``seed``."""
        obs, info = self.env.reset(seed=int(seed))
        self.coverage = 0.0
        self._obs = self._convert(obs, info)
        return self._obs

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Move the agent towards the target position ``action`` (2,) in pixels (clipped to 0..512)
        for one control period; returns the next observation and ``{"reward", "coverage"}``."""
        if self._obs is None:
            raise RuntimeError("PushTEnv.step called before reset")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,):
            raise DpError(f"task 'pusht': action must have shape (2,) (target x, y in pixels), got {action.shape}")
        if not np.isfinite(action).all():
            raise DpError(f"task 'pusht': action holds NaN or inf: {action}")
        obs, reward, _, _, info = self.env.step(np.clip(action, 0.0, 512.0))
        self.coverage = float(info["coverage"])
        self._obs = self._convert(obs, info)
        return self._obs, {"reward": float(reward), "coverage": self.coverage}

    def observation(self) -> dict[str, np.ndarray]:
        if self._obs is None:
            raise RuntimeError("PushTEnv.observation called before reset")
        return self._obs

    def success(self) -> bool:
        """Whether the block covers at least 95% of the target now."""
        return self.coverage >= SUCCESS_COVERAGE

    def score(self) -> float:
        """min(coverage / 0.95, 1) now; an episode scores the maximum over its steps."""
        return min(self.coverage / SUCCESS_COVERAGE, 1.0)

    def milestones(self) -> dict[str, bool]:
        """None: the score already grades how far an episode got."""
        return {}

    def render(self, camera: str, size: int) -> np.ndarray:
        """The scene with the target (green), the block, the agent and the last action (a cross)."""
        import cv2

        self.spec.image_keys([camera])
        frame = self.env.render()
        return np.ascontiguousarray(cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA))

    def close(self) -> None:
        self.env.close()

    def _convert(self, obs: Any, info: dict[str, Any]) -> dict[str, np.ndarray]:
        pose = np.asarray(info["block_pose"], dtype=np.float64)
        agent = np.asarray(info["pos_agent"], dtype=np.float64)
        out = {
            "agent_pos": agent.astype(np.float32),
            "keypoint": keypoints(pose).reshape(-1).astype(np.float32),
            "state": np.array([*agent, pose[0], pose[1], pose[2] % (2 * np.pi)], dtype=np.float32),
        }
        if self.cameras:
            out["img"] = np.ascontiguousarray(obs["pixels"], dtype=np.uint8)
        return out
