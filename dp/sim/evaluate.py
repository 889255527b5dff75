"""Policy evaluation in simulation: seeded rollouts, success rate with a 95% Wilson interval, mean
score with a 95% t-interval, mean episode length, policy latency, and MP4s of the first episodes.

Seeds come in two splits, streams apart from each other and from the one collection uses (so a
policy is never judged on the initial states of its training demonstrations): ``val``
(``seed_for(S, i, "val")``) for every choice of settings (checkpoint, RTI, sampler steps) and
``test`` (``seed_for(S, i, "test")``, the stream older figures call "eval") for reported figures only.
The score is the maximum over an episode's steps of the task's score (Push-T: min(coverage / 0.95, 1),
Diffusion Policy's protocol; robosuite tasks: 1 once solved).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dp.errors import DpError
from dp.stats import mean_interval, wilson_interval
from dp.sim.rollout import ActionSource, run_episode, seed_for
from dp.sim.tasks import Task, get_task

SPLITS = ("val", "test")


def load_policy(
    spec: str, *, rti: bool = False, rti_steps: int | None = None, rti_sigma: float | None = None, rti_every: int | None = None
) -> ActionSource:
    """The policy ``spec`` names, tried in order: ``expert:<task>`` (a scripted expert); a folder with
    ``policy.onnx`` (``dp.infer.OnnxPolicy``); a folder with ``model.safetensors``, a run or a
    checkpoint (``dp.infer.Policy``). ``rti`` turns real-time-iteration warm starts on; ``rti_steps``,
    ``rti_sigma`` and ``rti_every`` (trained runs only: an export fixes them) choose its steps, start
    sigma and re-planning interval."""
    if spec.startswith("expert:"):
        from dp.sim.experts import make_expert

        if rti:
            raise DpError("--rti applies to trained policies, not to a scripted expert")
        return make_expert(spec.split(":", 1)[1])
    path = Path(spec)
    if not path.exists():
        raise DpError(f"policy {spec!r}: no such file or folder (expected expert:TASK, an exported folder or a run folder)")
    if (path / "policy.onnx").is_file():
        if (rti_steps, rti_sigma, rti_every) != (None, None, None):
            raise DpError(f"{spec}: an exported policy's warm start is fixed at export; "
                          "re-export with `dp export --rti-steps K --rti-sigma S --rti-every N`")
        return _load(_runtime("OnnxPolicy"), path, rti)
    if path.is_dir():  # a run folder, a checkpoint folder (model.safetensors), or a mistake Policy.load reports
        if (rti_steps, rti_sigma, rti_every) != (None, None, None):
            from dp.infer.rti import RTISettings

            default = RTISettings()
            settings = RTISettings(rti_steps or default.steps, default.sigma_start if rti_sigma is None else rti_sigma, rti_every or default.every)
            return _runtime("Policy").load(path, rti=settings)
        return _load(_runtime("Policy"), path, rti)
    raise DpError(f"policy {spec!r}: expected expert:TASK, a folder with policy.onnx, or a run/checkpoint folder with model.safetensors")


def _runtime(name: str) -> Any:
    """``dp.infer.<name>``, imported only when needed (torch, onnxruntime)."""
    try:
        import dp.infer

        return getattr(dp.infer, name)
    except (ImportError, AttributeError) as exc:
        raise DpError(f"the policy runtime dp.infer.{name} is not available here ({exc})") from None


def _load(cls: Any, path: Path, rti: bool) -> ActionSource:
    if not rti:
        return cls.load(path)
    if "rti" not in inspect.signature(cls.load).parameters:
        raise DpError(f"{cls.__name__}.load has no rti option: this runtime cannot run RTI warm starts")
    return cls.load(path, rti=True)




@dataclass
class EvalResult:
    """The figures `dp eval` prints."""

    task: str
    episodes: int
    successes: int
    lengths: list[int]
    seeds: list[int]
    latency_ms: np.ndarray = field(repr=False)  # per select_action call, all episodes
    videos: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    split: str = "test"

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    def as_dict(self) -> dict[str, Any]:
        low, high = wilson_interval(self.successes, self.episodes)
        lat = self.latency_ms
        return {
            "task": self.task,
            "split": self.split,
            "episodes": self.episodes,
            "successes": self.successes,
            "success_rate": self.success_rate,
            "success_ci95": [low, high],
            "mean_score": float(np.mean(self.scores)) if self.scores else 0.0,
            "score_ci95": list(mean_interval(self.scores)),
            "scores": [round(s, 6) for s in self.scores],
            "mean_length": float(np.mean(self.lengths)) if self.lengths else 0.0,
            "lengths": self.lengths,
            "latency_ms": {
                "median": float(np.median(lat)) if lat.size else None,
                "p99": float(np.percentile(lat, 99)) if lat.size else None,
                "calls": int(lat.size),
            },
            "seeds": self.seeds,
            "videos": self.videos,
        }


def policy_cameras(policy: ActionSource, spec: Task) -> list[str]:
    """The cameras of task ``spec`` that render the image keys the policy declares (``image_keys``);
    a DpError when the task cannot give one of them."""
    keys = list(getattr(policy, "image_keys", None) or [])
    by_key = {spec.image_keys([cam])[0]: cam for cam in spec.cameras}
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise DpError(f"the policy observes image key(s) {missing}; task {spec.name!r} renders only {sorted(by_key)}")
    return [by_key[k] for k in keys]


def check_fit(policy: ActionSource, spec: Task) -> None:
    """A DpError when the policy cannot act in the task: other action width, or a low-dim key the
    task does not observe (checked before any episode runs)."""
    width = getattr(policy, "action_dim", None)
    if width is not None and int(width) != spec.action_dim:
        raise DpError(f"the policy's actions have {width} values but task {spec.name!r} takes {spec.action_dim} "
                      f"(a policy trained on another task?)")
    missing = [k for k in getattr(policy, "lowdim_keys", None) or [] if k not in spec.lowdim_keys]
    if missing:
        raise DpError(f"the policy observes {missing}, which task {spec.name!r} does not give "
                      f"(it gives {spec.lowdim_keys} and images {spec.image_keys()})")


def evaluate(
    policy: ActionSource,
    task: str,
    episodes: int,
    *,
    seed: int = 0,
    split: str = "test",
    cameras: list[str] | None = None,
    image_size: int | None = None,
    video_dir: Path | None = None,
    video_episodes: int = 3,
    video_size: int = 256,
    progress: bool = True,
) -> EvalResult:
    """Roll ``policy`` out for ``episodes`` episodes of ``task`` seeded from ``split`` ("val" or
    "test"). ``cameras`` are rendered into the observations (default: those the policy declares, at
    ``image_size``, default the task's); with ``video_dir`` the first ``video_episodes`` episodes are
    written as MP4s with every camera side by side."""
    spec = get_task(task)
    if episodes < 1:
        raise DpError(f"--episodes must be at least 1, got {episodes}")
    if split not in SPLITS:
        raise DpError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    check_fit(policy, spec)
    cameras = policy_cameras(policy, spec) if cameras is None else list(cameras)
    env = spec.make_env(cameras, image_size, offscreen=video_dir is not None)
    if video_dir is not None:
        video_dir.mkdir(parents=True, exist_ok=True)
    result = EvalResult(spec.name, 0, 0, [], [], np.zeros(0), split=split)
    latencies: list[np.ndarray] = []
    bar = tqdm(total=episodes, desc=f"eval {spec.name}", unit="ep", disable=not progress)
    try:
        for i in range(episodes):
            video = video_dir is not None and i < video_episodes
            ep = run_episode(env, policy, seed_for(seed, i, split), record=False,
                             video_cameras=list(spec.cameras) if video else None, video_size=video_size)
            result.episodes += 1
            result.successes += ep.success
            result.scores.append(ep.score)
            result.lengths.append(ep.length)
            result.seeds.append(ep.seed)
            latencies.append(ep.latencies * 1000.0)
            if video:
                path = video_dir / f"{spec.name}_ep{i:03d}_{'success' if ep.success else 'failure'}.mp4"
                write_mp4(path, ep.frames, spec.control_freq)
                result.videos.append(str(path))
            bar.update(1)
            bar.set_postfix(success=f"{result.success_rate:.0%}", score=f"{np.mean(result.scores):.3f}")
    finally:
        bar.close()
        env.close()
    result.latency_ms = np.concatenate(latencies) if latencies else np.zeros(0)
    return result


def write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Write RGB uint8 frames as an H.264 MP4 (yuv420p: browsers play it) through PyAV.

    Without PyAV (``pip install av``, in the ``video`` extra) opencv writes MPEG-4 Part 2 (``mp4v``),
    which players such as VLC read but browsers do not; a warning says so.
    """
    if not frames:
        raise DpError(f"{path}: no frames to write")
    try:
        import av
    except ImportError:
        av = None
    if av is None:
        _write_mp4_opencv(path, frames, fps)
        return
    from fractions import Fraction

    height, width = frames[0].shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": "23", "preset": "medium"})
        stream.width, stream.height, stream.pix_fmt = width + width % 2, height + height % 2, "yuv420p"  # yuv420p: even sizes
        for frame in frames:
            if frame.shape[:2] != (stream.height, stream.width):
                frame = np.pad(frame, ((0, stream.height - height), (0, stream.width - width), (0, 0)), mode="edge")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode(None))


def _write_mp4_opencv(path: Path, frames: list[np.ndarray], fps: float) -> None:
    import warnings

    import cv2

    warnings.warn("PyAV is not installed: writing MPEG-4 Part 2 (mp4v), which browsers do not play; pip install av for H.264",
                  stacklevel=3)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise DpError(f"{path}: opencv cannot open an MP4 writer here")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
