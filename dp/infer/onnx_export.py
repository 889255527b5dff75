"""ONNX export: one graph per entry point, from raw observations to raw actions.

``policy.onnx`` samples a chunk from noise (the full schedule); ``policy_warm.onnx`` samples it from
a guess (RTI: the previous chunk shifted, see :mod:`dp.infer.rti`). Each graph holds the observation
normalisation, the encoders, the cached denoiser (:mod:`dp.infer.caching`) unrolled over its
schedule, the unnormalisation and the snapping of discrete action dimensions. Noise is an input, so
a run is reproducible. ``policy.yaml`` beside them says everything a runtime needs (keys, shapes,
dtypes, horizons, rates, sampler and RTI settings, goal vocabulary, the language embeddings the
policy was trained with and the sentence encoder that made them (so that a runtime embeds a new
instruction the same way, and needs no text model for a known one), the onnx files' sha256).

Exporter: torch 2.13's default ``torch.onnx.export(dynamo=True)`` needs the ``onnxscript`` package,
which the stack does not otherwise use. With it installed, the dynamo exporter also gives a correct
graph here (4e-6 from torch) but exports ~10x slower; the TorchScript exporter (``dynamo=False``,
deprecated but present) traces these straight-line graphs (no data-dependent control flow: routing
is cached, the loop unrolled) to within ~1e-7 of torch (tested to 1e-4 against the uncached torch
Policy), with no extra dependency, so it is the one used.
"""

from __future__ import annotations

import datetime
import inspect
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import yaml
from torch import nn

from dp.data.normalize import Normalizer
from dp.errors import DpError
from dp.infer.caching import CachedSampler
from dp.infer.policy import Policy
from dp.infer.rti import RTISettings
from dp.infer.runtime_common import FULL_FILE, SPEC_FILE, SPEC_FORMAT, SPEC_VERSION, WARM_FILE, sha256_file

OPSET = 17


def normalizer_affine(normalizer: Normalizer, key: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, offset)`` float32 with ``normalize(key, x) == x * scale + offset``, read through the
    Normalizer's public API (probing with float64 zeros and ones recovers both exactly)."""
    probe = np.zeros((2, len(normalizer.stats[key]["min"])))
    probe[1] = 1.0
    mapped = normalizer.normalize(key, probe)
    offset = mapped[0].astype(np.float32)
    scale = (mapped[1] - mapped[0]).astype(np.float32)
    return torch.from_numpy(scale).to(device), torch.from_numpy(offset).to(device)


class PolicyGraph(nn.Module):
    """Raw observations + goal + noise (+ raw guess) -> raw action chunk (1, H, A), discrete dims snapped.

    Inputs, in order: low-dim keys (1, To, *shape) float32, image keys (1, To, H, W, C) uint8, the
    goal (``task_id`` (1,) int64 or ``lang_emb`` (1, E) float32, if any), ``noise`` (1, H, A) standard
    normal, and for the warm entry point ``guess`` (1, H, A) raw actions.
    """

    def __init__(self, policy: Policy, sampler: CachedSampler, warm: bool):
        super().__init__()
        self.model = policy.model
        self.sampler = sampler
        self.warm = warm
        self.lowdim_keys, self.image_keys = list(policy.lowdim_keys), list(policy.image_keys)
        self.goal_kind = policy.cfg.model.goal
        for i, key in enumerate([*self.lowdim_keys, policy.action_key]):  # the normaliser's affine maps, as constants
            scale, offset = normalizer_affine(policy.normalizer, key, policy.device)
            self.register_buffer(f"scale{i}", scale)
            self.register_buffer(f"offset{i}", offset)
        mask = torch.zeros(policy.action_dim, dtype=torch.bool)
        mask[policy.discrete_dims] = True
        self.register_buffer("discrete", mask)

    def _affine(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"scale{i}"), getattr(self, f"offset{i}")

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        values = list(inputs)
        obs = {}
        for i, key in enumerate(self.lowdim_keys):  # the same float32 arithmetic as Normalizer.normalize
            scale, offset = self._affine(i)
            obs[key] = values.pop(0) * scale + offset
        obs.update({k: values.pop(0) for k in self.image_keys})
        goal = {}
        if self.goal_kind in ("task", "lang"):
            goal["task_id" if self.goal_kind == "task" else "lang_emb"] = values.pop(0)
        noise = values.pop(0)
        cond = self.model.encode(obs, **goal)
        sigma0 = self.sampler.sigmas[0]
        scale, offset = self._affine(len(self.lowdim_keys))
        if self.warm:
            x = (values.pop(0) * scale + offset) + sigma0 * noise
        else:
            x = noise * sigma0
        action = (self.sampler(cond, x) - offset) / scale
        return torch.where(self.discrete, torch.where(action >= 0, 1.0, -1.0), action)


def graph_inputs(policy: Policy, warm: bool) -> list[tuple[str, list[int], str]]:
    """(name, shape, dtype) of each graph input, in the order :class:`PolicyGraph` takes them."""
    data = policy.cfg.data
    To, chunk = data.obs_horizon, [1, policy.action_horizon, policy.action_dim]
    specs = [(k, [1, To, *data.shapes[k]], "float32") for k in policy.lowdim_keys]
    specs += [(k, [1, To, *data.shapes[k]], "uint8") for k in policy.image_keys]
    if policy.cfg.model.goal == "task":
        specs.append(("task_id", [1], "int64"))
    elif policy.cfg.model.goal == "lang":
        specs.append(("lang_emb", [1, policy.cfg.model.lang_dim], "float32"))
    specs.append(("noise", chunk, "float32"))
    if warm:
        specs.append(("guess", chunk, "float32"))
    names = [name for name, _, _ in specs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise DpError(f"observation key(s) {clash} clash with the graph's own inputs (task_id, lang_emb, noise, guess); rename them in the store")
    return specs


def example_inputs(policy: Policy, warm: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible random inputs: low-dim values and guesses inside the normaliser's range, random images."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape, dtype in graph_inputs(policy, warm):
        if name in policy.lowdim_keys:
            unit = rng.uniform(-1, 1, shape).astype(np.float32)
            out[name] = policy.normalizer.unnormalize(name, unit).astype(np.float32)
        elif name in policy.image_keys:
            out[name] = rng.integers(0, 256, shape, dtype=np.uint8)
        elif name == "task_id":
            out[name] = np.zeros(shape, dtype=np.int64)
        elif name == "lang_emb":
            emb = next(iter(policy.goals.values()), None)
            out[name] = np.asarray(emb, dtype=np.float32).reshape(shape) if emb is not None else rng.normal(size=shape).astype(np.float32)
        elif name == "noise":
            out[name] = rng.standard_normal(shape).astype(np.float32)
        else:  # guess: a raw action chunk, discrete dims at +-1
            unit = rng.uniform(-1, 1, shape).astype(np.float32)
            unit[..., policy.discrete_dims] = np.sign(unit[..., policy.discrete_dims])
            out[name] = policy.normalizer.unnormalize(policy.action_key, unit).astype(np.float32)
    return out


def _export_graph(graph: PolicyGraph, policy: Policy, warm: bool, path: Path) -> None:
    specs = graph_inputs(policy, warm)
    args = tuple(torch.from_numpy(v).to(policy.device) for v in example_inputs(policy, warm).values())
    # torch < 2.5 has no `dynamo` argument (and only the TorchScript exporter)
    choice = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            graph, args, str(path), opset_version=OPSET,
            input_names=[name for name, _, _ in specs], output_names=["action"], **choice,
        )
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise DpError(f"{path}: the exported graph does not pass the ONNX checker: {exc}") from exc


def check_against_torch(graph: PolicyGraph, policy: Policy, path: Path, tolerance: float = 1e-4) -> float:
    """Run the exported file in ONNX Runtime and ``graph`` in torch on the same example inputs; a
    DpError if the continuous action dimensions differ by more than ``tolerance`` (relative to the
    action scale). Returns the largest difference."""
    import onnxruntime as ort

    feeds = example_inputs(policy, graph.warm, seed=1)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)[0]
    with torch.no_grad():
        want = graph(*(torch.from_numpy(v).to(policy.device) for v in feeds.values())).cpu().numpy()
    continuous = [d for d in range(policy.action_dim) if d not in policy.discrete_dims]
    diff = float(np.abs(got - want)[..., continuous].max()) if continuous else 0.0
    scale = max(1.0, float(np.abs(want).max()))
    if not diff <= tolerance * scale:
        raise DpError(f"{path}: ONNX Runtime and torch disagree by {diff:.3g} (tolerance {tolerance * scale:.3g}); the export is wrong")
    return diff


def build_graphs(policy: Policy, steps: int | None, rti: RTISettings) -> tuple[PolicyGraph, PolicyGraph]:
    """The full and warm entry points of ``policy`` (eval mode, experts cached for both schedules)."""
    model = policy.model.eval()
    full = CachedSampler(model, model.schedule(steps or policy.steps)).eval()
    warm = CachedSampler(model, rti.for_model(model, steps or policy.steps)).eval()
    return PolicyGraph(policy, full, warm=False).eval(), PolicyGraph(policy, warm, warm=True).eval()


def _control_freq(policy: Policy) -> float | None:
    """The training data's control frequency (the first store that still opens), or None."""
    from dp.data.store import EpisodeStore

    for path in policy.cfg.data.stores:
        try:
            with EpisodeStore.open(path, mode="r") as store:
                if store.control_freq:
                    return float(store.control_freq)
        except Exception:  # a store moved or deleted since training: try the next one
            continue
    return None


def build_spec(policy: Policy, full: PolicyGraph, warm: PolicyGraph, rti: RTISettings, control_freq: float | None, source: str) -> dict[str, Any]:
    """The ``policy.yaml`` content (without file hashes)."""
    cfg, data = policy.cfg, policy.cfg.data
    io = {}
    for name, graph in ((FULL_FILE, full), (WARM_FILE, warm)):
        inputs = {n: {"shape": s, "dtype": d} for n, s, d in graph_inputs(policy, graph.warm)}
        io[name] = {"inputs": inputs, "outputs": {"action": {"shape": [1, policy.action_horizon, policy.action_dim], "dtype": "float32"}}}
    stats = policy.normalizer.stats
    return {
        "format": SPEC_FORMAT,
        "version": SPEC_VERSION,
        "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "preset": cfg.preset,
        "observation": {
            "lowdim_keys": list(policy.lowdim_keys),
            "image_keys": list(policy.image_keys),
            "shapes": {k: list(data.shapes[k]) for k in policy.obs_keys},
            "dtypes": {k: ("uint8" if k in policy.image_keys else "float32") for k in policy.obs_keys},
            "horizon": policy.obs_horizon,
            "pad_lowdim": bool(data.pad_lowdim),
        },
        "action": {
            "key": policy.action_key,
            "dim": policy.action_dim,
            "horizon": policy.action_horizon,
            "n_action_steps": policy.n_action_steps,
            "discrete_dims": list(policy.discrete_dims),
        },
        "control_freq": control_freq,
        "sampler": {
            "steps": full.sampler.n_steps,
            "sigmas": full.sampler.sigmas,
            "sigma_data": cfg.diffusion.sigma_data,
            "sigma_min": cfg.diffusion.sigma_min,
            "sigma_max": cfg.diffusion.sigma_max,
        },
        "rti": {"steps": rti.steps, "sigma_start": rti.sigma_start, "every": rti.every, "sigmas": warm.sampler.sigmas},
        "goal": {
            "kind": cfg.model.goal,
            "tasks": list(policy.tasks),
            "instructions": dict(policy.instructions),
            "embeddings": {k: np.asarray(v, dtype=np.float32).tolist() for k, v in sorted(policy.goals.items())},
            "encoder": cfg.vocab.lang_encoder or None,  # embeds new instructions at run time (None: only the known ones)
        },
        "normalizer": {
            k: {s: np.asarray(stats[k][s]).tolist() for s in ("min", "max")} for k in [*policy.lowdim_keys, policy.action_key]
        },
        "graphs": io,
    }


def export_policy(
    policy: Policy,
    out: str | Path,
    steps: int | None = None,
    rti: RTISettings | None = None,
    control_freq: float | None = None,
    source: str = "",
    progress: Any = None,
) -> dict[str, Any]:
    """Write ``policy.onnx``, ``policy_warm.onnx`` and ``policy.yaml`` into folder ``out``; returns the spec.

    ``progress``: an optional callable ``progress(stage)`` told when each of the 5 stages is done.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rti = rti or RTISettings()
    step = progress or (lambda _stage: None)
    full, warm = build_graphs(policy, steps, rti)
    step("experts cached")
    for graph, name in ((full, FULL_FILE), (warm, WARM_FILE)):
        with torch.no_grad():
            _export_graph(graph, policy, graph.warm, out / name)
        step(f"{name} exported")
    for graph, name in ((full, FULL_FILE), (warm, WARM_FILE)):
        check_against_torch(graph, policy, out / name)
    step("graphs match torch")
    if control_freq is None:
        control_freq = _control_freq(policy)
    spec = build_spec(policy, full, warm, rti, control_freq, source)
    spec["files"] = {name: {"sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size} for name in (FULL_FILE, WARM_FILE)}
    (out / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False, width=120, default_flow_style=None))
    step(f"{SPEC_FILE} written")
    return spec
