"""The ONNX Runtime policy: an exported folder that acts, with numpy and onnxruntime only (no torch).

``OnnxPolicy.load(DIR)`` checks ``policy.yaml`` and the sha256 of every file it names (the three
graphs and their shared weights) before creating any session, so a folder with a missing, truncated
or mismatched file is refused with a clear error. The API is the torch Policy's: ``reset(instruction=None)``,
``predict_chunk(obs, noise=None)``, ``select_action(obs)``; ``rti=True`` samples every chunk after the
first from the previous one (``policy_warm.onnx``, see :mod:`dp.infer.rti`) instead of from noise, and
an episode's first chunk by full sampling, or with ``first_chunk="short"`` by the short sampler
(``policy_first.onnx``, about the cost of a warm chunk: for a policy switched mid-motion). Full is the
default because the short first chunk cost success on `can` (validation 41/50 against 48/50; test
174/200 against 184/200), and the node samples an episode's first chunk while the robot holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from dp.data.levels import discrete_levels
from dp.devices import check_providers, onnx_providers, onnx_session
from dp.errors import DpError
from dp.infer.chunked_runtime import ChunkedRuntime
from dp.infer.export_format import (
    FIRST_FILE,
    FULL_FILE,
    SPEC_FILE,
    WARM_FILE,
    read_spec,
)


def session_options(threads: int = 1) -> ort.SessionOptions:
    """Options for batch-1 latency on a small CPU: every graph optimisation, ``threads`` intra-op
    threads (1 by default: the matmuls are small, and the robot's controller needs the other core),
    no spinning threads burning a core between calls."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class OnnxPolicy(ChunkedRuntime):
    """An exported MoDE policy run by ONNX Runtime. Same API as :class:`dp.infer.Policy`."""

    def __init__(
        self, folder: str | Path, rti: bool = False, n_action_steps: int | None = None, seed: int = 0, threads: int = 1, first_chunk: str = "full",
        device: str = "cpu", providers: list[Any] | None = None, task_action_steps: dict[str, int] | None = None,
    ):
        if first_chunk not in ("short", "full"):
            raise DpError(f"first_chunk must be 'short' or 'full', got {first_chunk!r}")
        if providers is None:
            providers = onnx_providers(device, what="device")
        else:
            check_providers(providers)
        self.providers = list(providers)
        self.folder = Path(folder)
        self.spec = spec = read_spec(self.folder)
        obs, act, goal = spec["observation"], spec["action"], spec["goal"]
        try:
            self.lowdim_keys, self.image_keys = list(obs["lowdim_keys"]), list(obs["image_keys"])
            self.obs_keys = [*self.lowdim_keys, *self.image_keys]
            self.shapes = {k: [int(n) for n in obs["shapes"][k]] for k in self.obs_keys}
            self.obs_horizon = int(obs["horizon"])
            self.pad_lowdim = bool(obs.get("pad_lowdim", False))
            self.action_key, self.action_dim, self.action_horizon = str(act["key"]), int(act["dim"]), int(act["horizon"])
            self.discrete_dims = [int(d) for d in act["discrete_dims"]]
            action_range = spec["normalizer"][self.action_key]
            self.discrete_levels = discrete_levels(np.asarray(action_range["min"]), np.asarray(action_range["max"]), self.discrete_dims)
            self.goal_kind = str(goal["kind"])
            self.tasks, self.instructions = list(goal["tasks"]), dict(goal["instructions"])
            self.goals = {k: np.asarray(v, dtype=np.float32) for k, v in goal["embeddings"].items()}
            self.lang_encoder = goal.get("encoder") or None  # older exports do not name it: known instructions only
            default_steps = int(spec["rti"].get("every", act["n_action_steps"]) if rti else act["n_action_steps"])
            exported_table = dict(act.get("task_n_action_steps", {}))  # older exports have none
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DpError(f"{self.folder / SPEC_FILE}: missing or malformed field ({type(exc).__name__}: {exc}); re-export the folder") from exc
        self.control_freq = spec.get("control_freq")
        self.rti = bool(rti)
        options = session_options(threads)
        short = self.rti and first_chunk == "short"
        self._full = None if short else self._session(FULL_FILE, options)  # sessions only for the graphs in use
        self._first = self._session(FIRST_FILE, options) if short else self._full
        self._warm = self._session(WARM_FILE, options) if self.rti else None
        self._start(n_action_steps, seed, own=default_steps, stored=exported_table, task_action_steps=task_action_steps)

    @classmethod
    def load(
        cls, path: str | Path, rti: bool = False, n_action_steps: int | None = None, seed: int = 0, threads: int = 1, first_chunk: str = "full",
        device: str = "cpu", providers: list[Any] | None = None, task_action_steps: dict[str, int] | None = None,
    ) -> OnnxPolicy:
        """Load an exported folder. ``first_chunk`` (with ``rti``): "full" (the default) samples an
        episode's first chunk with ``policy.onnx``, "short" with ``policy_first.onnx`` (about the cost of
        a warm chunk). The graphs run on ONNX Runtime's ``providers`` (names or (name, options) pairs,
        most preferred first), by default those of ``device`` (:func:`dp.devices.onnx_providers`: cpu,
        cuda[:N], auto; TensorRT with ``providers=onnx_providers("cuda", tensorrt=True)``); a provider
        ONNX Runtime does not have, or cannot start, is refused before the policy acts. Each task
        re-plans at its exported interval (``action.task_n_action_steps``, else ``n_action_steps``) unless
        ``n_action_steps`` (every task) or ``task_action_steps`` (a table of its own) is given."""
        return cls(path, rti=rti, n_action_steps=n_action_steps, seed=seed, threads=threads, first_chunk=first_chunk,
                   device=device, providers=providers, task_action_steps=task_action_steps)

    def _session(self, name: str, options: ort.SessionOptions) -> ort.InferenceSession:
        path = self.folder / name
        session = onnx_session(path, self.providers, options)
        declared = self.spec["graphs"].get(name, {}).get("inputs", {})
        actual = {i.name: list(i.shape) for i in session.get_inputs()}
        if {k: v["shape"] for k, v in declared.items()} != actual:
            raise DpError(f"{path}: graph inputs {actual} do not match {SPEC_FILE} {declared}; re-export the folder")
        return session

    @property
    def lang_dim(self) -> int:
        return int(self.spec["graphs"][FULL_FILE]["inputs"]["lang_emb"]["shape"][-1])

    def _full_sampler(self) -> dict[str, Any]:
        sampler = self.spec.get("sampler") or {}  # exports before the sampler choice name no schedule or solver
        return {"solver": sampler.get("solver"), "schedule": sampler.get("schedule"), "steps": sampler.get("steps")}

    def _goal_input(self, goal: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return goal

    # ------------------------------------------------------------------ acting
    def _sample_chunks(self, noise: np.ndarray, window: dict[str, np.ndarray], goal: dict[str, np.ndarray],
                       guess: np.ndarray | None) -> np.ndarray:
        feeds = {**window, **goal}
        warm = self._warm is not None and guess is not None
        if warm:
            feeds["guess"] = guess[None]
        session = self._warm if warm else (self._first if self.rti else self._full)
        # the graphs take one chunk: several voting chunks run one after the other
        return np.stack([session.run(None, {**feeds, "noise": row[None]})[0][0] for row in noise])
