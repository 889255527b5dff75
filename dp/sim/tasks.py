"""The simulation task registry: robosuite 1.5 tasks with a Panda arm under the OSC_POSE controller,
and Push-T (``dp.sim.pusht``, gym-pusht). Eval, collection and the simulated controller see a task only
through the small :class:`Task` / :class:`Env` interface of :mod:`dp.sim.task_api`, which both implement.

A robosuite :class:`TaskSpec` names a robosuite environment and fixes what the rest of the stack sees of it:
the low-dim observation keys (``robot0_eef_pos``, ``robot0_eef_quat``, ``robot0_gripper_qpos`` and
the task's object state as ``object``), the cameras (``<camera>_image``, uint8 HxWx3, upright), the
language instruction, the success check and the episode length. :meth:`TaskSpec.make_env` builds a
:class:`SimEnv`, a thin wrapper whose ``reset(seed)`` makes an episode reproducible.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dp.errors import DpError
from dp.sim.milestones import MILESTONES
from dp.sim.pusht import PushTTask
from dp.sim.task_api import Env, Task

ROBOT_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
CAMERAS = ("agentview", "robot0_eye_in_hand")
ACTION_DIM = 7  # OSC_POSE delta xyz (3), delta axis-angle (3), gripper (-1 open, +1 close)
GRIPPER_DIM = 6


@dataclass(frozen=True)
class TaskSpec:
    """One task: which robosuite environment, what is observed, what counts as done."""

    name: str
    env_name: str
    instruction: str
    horizon: int
    object_parts: tuple[tuple[str, int], ...]  # robosuite observables concatenated into `object`
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    control_freq: float = 20.0
    cameras: tuple[str, ...] = CAMERAS
    action_dim: int = ACTION_DIM
    image_size: int = 84
    robot: str = "panda"
    discrete_action_dims: tuple[int, ...] = (ACTION_DIM - 1,)  # the gripper: open or closed

    @property
    def lowdim_keys(self) -> list[str]:
        return [*ROBOT_KEYS, "object"]

    @property
    def object_dim(self) -> int:
        return sum(n for _, n in self.object_parts)

    def object_slices(self) -> dict[str, slice]:
        """Where each robosuite observable sits inside the ``object`` vector."""
        out, start = {}, 0
        for name, n in self.object_parts:
            out[name] = slice(start, start + n)
            start += n
        return out

    def image_keys(self, cameras: list[str] | tuple[str, ...] | None = None) -> list[str]:
        return [f"{cam}_image" for cam in (self.cameras if cameras is None else cameras)]

    def make_env(
        self,
        cameras: list[str] | None = None,
        image_size: int | None = None,
        *,
        offscreen: bool = False,
        viewer: bool = False,
    ) -> SimEnv:
        """A new environment. ``cameras`` selects camera observations (none by default, which keeps
        creation cheap: no renderer); ``offscreen`` adds a renderer for :meth:`SimEnv.render` only;
        ``viewer`` opens an on-screen window (teleoperation; needs a display)."""
        return SimEnv(self, list(cameras or []), image_size or self.image_size, offscreen=offscreen, viewer=viewer)


TASKS: dict[str, Task] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "lift", "Lift", "lift the cube", horizon=200,
            object_parts=(("cube_pos", 3), ("cube_quat", 4), ("gripper_to_cube_pos", 3)),
        ),
        TaskSpec(
            "stack", "Stack", "stack the red cube on the green cube", horizon=300,
            object_parts=(("cubeA_pos", 3), ("cubeA_quat", 4), ("cubeB_pos", 3), ("cubeB_quat", 4),
                          ("gripper_to_cubeA", 3), ("gripper_to_cubeB", 3), ("cubeA_to_cubeB", 3)),
        ),
        TaskSpec(
            "can", "PickPlaceCan", "put the can into its bin", horizon=400,
            object_parts=(("Can_pos", 3), ("Can_quat", 4), ("Can_to_robot0_eef_pos", 3), ("Can_to_robot0_eef_quat", 4)),
        ),
        TaskSpec(
            "door", "Door", "open the door", horizon=300,
            object_parts=(("door_pos", 3), ("handle_pos", 3), ("door_to_eef_pos", 3), ("handle_to_eef_pos", 3),
                          ("hinge_qpos", 1), ("handle_qpos", 1)),
            env_kwargs={"use_latch": True},
        ),
        TaskSpec(
            "square", "NutAssemblySquare", "put the square nut on the square peg", horizon=400,
            object_parts=(("SquareNut_pos", 3), ("SquareNut_quat", 4), ("SquareNut_to_robot0_eef_pos", 3),
                          ("SquareNut_to_robot0_eef_quat", 4)),
        ),
    )
}
TASKS["pusht"] = PushTTask()


def get_task(name: str) -> Task:
    """The task called ``name``; a :class:`DpError` listing the known tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise DpError(f"unknown task {name!r} (known tasks: {', '.join(TASKS)})") from None


def import_robosuite() -> Any:
    """Import robosuite with its console chatter (missing private macros, controller paths) muted."""
    logger = logging.getLogger("robosuite_logs")
    if not any(isinstance(f, _ErrorsOnly) for f in logger.filters):
        logger.addFilter(_ErrorsOnly())
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    import robosuite

    return robosuite


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextmanager
def _fixed_model_draws(seed: int = 0) -> Iterator[None]:
    """Build a robosuite env whose randomly sized objects are the same in every instance.

    robosuite draws some object sizes once, at construction, from unseeded generators: `lift`'s cube
    from the env's own (``np.random.default_rng(None)`` unless ``suite.make`` is given a seed), `stack`'s
    cubes from a fresh ``np.random.default_rng()`` that no option reaches. Unfixed, each env instance
    (each eval or collect worker) had a cube of its own, so an episode's seed did not fix the episode.
    Hence numpy's unseeded constructor swapped, for the construction only, for one drawing from ``seed``."""
    real = np.random.default_rng
    draws = real(seed)

    def default_rng(seed: Any = None) -> np.random.Generator:
        return real(draws.integers(2**63) if seed is None else seed)

    np.random.default_rng = default_rng
    try:
        yield
    finally:
        np.random.default_rng = real


class SimEnv(Env):
    """A robosuite environment seen through the project's keys. Build it with :meth:`TaskSpec.make_env`."""

    def __init__(self, spec: TaskSpec, cameras: list[str], image_size: int, *, offscreen: bool, viewer: bool):
        unknown = [c for c in cameras if c not in spec.cameras]
        if unknown:
            raise DpError(f"task {spec.name!r}: unknown camera(s) {unknown} (known: {', '.join(spec.cameras)})")
        if image_size < 8:
            raise DpError(f"image size must be at least 8 pixels, got {image_size}")
        self.spec = spec
        self.cameras = cameras
        self.image_size = image_size
        suite = import_robosuite()
        controller = suite.load_composite_controller_config(controller="BASIC", robot="Panda")
        with _fixed_model_draws():
            self.env = suite.make(
                spec.env_name,
                robots="Panda",
                controller_configs=controller,
                has_renderer=viewer,
                has_offscreen_renderer=bool(cameras) or offscreen,
                use_camera_obs=bool(cameras),
                camera_names=cameras or "agentview",
                camera_heights=image_size,
                camera_widths=image_size,
                control_freq=int(spec.control_freq),
                horizon=spec.horizon,
                ignore_done=True,
                hard_reset=False,  # reloading the model every episode costs ~0.5 s (and would redraw the object sizes)
                reward_shaping=False,
                **spec.env_kwargs,
            )
        context = self.env.sim._render_context_offscreen  # robosuite makes it in its constructor
        if context is not None:
            # Shadows and reflections double the cost of a frame on a CPU renderer (llvmpipe):
            # ~40 -> ~17 ms per 84x84 camera here.
            import mujoco

            context.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            context.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._obs: dict[str, Any] | None = None

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        """Start an episode; the same seed gives the same initial state (object placement, arm noise)."""
        # robosuite's placement samplers and robot hold references to env.rng: reseed it in place.
        self.env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self._obs = self.env.reset()
        return self._convert(self._obs)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Apply one OSC_POSE action (7,) in [-1, 1]; returns the next observation and ``{"reward"}``."""
        if self._obs is None:
            raise RuntimeError("SimEnv.step called before reset")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,):
            raise DpError(f"task {self.spec.name!r}: action must have shape ({ACTION_DIM},), got {action.shape}")
        if not np.isfinite(action).all():
            raise DpError(f"task {self.spec.name!r}: action holds NaN or inf: {action}")
        self._obs, reward, _, _ = self.env.step(np.clip(action, -1.0, 1.0))
        return self._convert(self._obs), {"reward": float(reward)}

    def observation(self) -> dict[str, np.ndarray]:
        """The current observation (what the last :meth:`reset` or :meth:`step` returned)."""
        if self._obs is None:
            raise RuntimeError("SimEnv.observation called before reset")
        return self._convert(self._obs)

    def success(self) -> bool:
        """Whether the task is solved in the current state (robosuite's own success check)."""
        return bool(self.env._check_success())

    def score(self) -> float:
        """1.0 when solved now, else 0.0 (robosuite tasks score success)."""
        return float(self.success())

    def milestones(self) -> dict[str, bool]:
        """The task's milestones reached in the current state (:mod:`dp.sim.milestones`)."""
        check = MILESTONES.get(self.spec.name)
        return check(self.env) if check else {}

    def render(self, camera: str, size: int) -> np.ndarray:
        """An upright uint8 (size, size, 3) view from a camera (needs ``offscreen`` or cameras)."""
        if self.env.sim._render_context_offscreen is None:
            raise RuntimeError("SimEnv.render needs an env made with offscreen=True or with cameras")
        frame = self.env.sim.render(camera_name=camera, width=size, height=size)
        return np.ascontiguousarray(frame[::-1])

    def close(self) -> None:
        self.env.close()

    def _convert(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        out = {key: np.asarray(obs[key], dtype=np.float32) for key in ROBOT_KEYS}
        out["object"] = np.concatenate(
            [np.asarray(obs[name], dtype=np.float32).reshape(n) for name, n in self.spec.object_parts]
        )
        for cam, key in zip(self.cameras, self.image_keys):
            out[key] = np.ascontiguousarray(obs[key][::-1])  # OpenGL rows are bottom-up
        return out
