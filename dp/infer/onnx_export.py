"""ONNX export: three entry points sharing one weights file, from raw observations to raw actions.

``policy.onnx`` samples a chunk from noise (the full schedule); ``policy_warm.onnx`` samples it from
a guess (RTI: the previous chunk shifted, see :mod:`dp.infer.rti`); ``policy_first.onnx`` samples an
episode's first chunk with a short sampler from a zero guess (it costs about what a warm chunk
costs). Each graph holds the observation normalisation, the encoders, the cached denoiser
(:mod:`dp.infer.caching`) unrolled over its schedule, the unnormalisation and the snapping of
discrete action dimensions. Noise is an input, so a run is reproducible. ``policy.yaml`` beside them
says everything a runtime needs (keys, shapes, dtypes, horizons, rates, sampler, RTI and first-chunk
settings, goal vocabulary, the language embeddings the policy was trained with and the sentence
encoder that made them, precision, the files' sha256).

Weights are stored once. Each graph is exported on its own; then every initializer of 1 KiB or more
goes into ``policy.weights`` once (identical tensors, found by content, within and across graphs,
become one entry, 4 KiB-aligned so that ONNX Runtime can map it) and the three graphs reference it as
ONNX external data. Hand-written because neither exporter nor ``onnx.external_data_helper`` shares
one data file between models.

Precision: ``fp32``; ``fp16`` stores the large weights as float16, cast back to float32 when ONNX
Runtime loads the graph (half the size, float32 arithmetic: the CPU provider has few float16
kernels); ``int8`` is onnxruntime's dynamic quantisation (``quantize_dynamic``: int8 weights for the
matmuls with constant weights, activations quantised per call).

Exporter: ``torchscript`` (``torch.onnx.export(dynamo=False)``, deprecated but present in torch
2.4-2.14) by default, ``dynamo`` (torch's current exporter; needs ``onnxscript``) on request. Both
express these graphs and match torch to ~1e-6, but the dynamo exporter takes ~8x longer on them
(torch.export traces every unrolled op, then each is translated: 52 s against 6.6 s for the 10-step
``tiny`` full graph on a busy 2-core machine), which the tests and ``dp quickstart`` cannot afford yet. ``tests/test_infer_onnx.py`` exports with
both and fails when the TorchScript exporter is gone, so that the default moves then.

Self-check: every graph is run in ONNX Runtime on several random inputs and compared with the
uncached, routed torch model (the router, all experts, the sampler loop): continuous action
dimensions within ``CHECK_TOLERANCE[precision]`` of the action scale, discrete ones of equal sign.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import yaml
from onnx import numpy_helper
from torch import nn

from dp.data.normalize import Normalizer
from dp.diffusion.sampler import ddim_sample
from dp.errors import DpError
from dp.infer.caching import CachedSampler, ExpertBank
from dp.infer.policy import Policy
from dp.infer.rti import RTISettings, warm_sample
from dp.infer.runtime_common import (
    FIRST_FILE,
    FULL_FILE,
    GRAPH_FILES,
    PRECISIONS,
    SPEC_FILE,
    SPEC_FORMAT,
    SPEC_VERSION,
    WARM_FILE,
    WEIGHTS_FILE,
    sha256_file,
)

OPSET = 17  # TorchScript exporter; the dynamo exporter writes opset 18, its lowest
EXPORTERS = ("torchscript", "dynamo")
CHECK_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.2}  # of the action scale (max |action|, at least 1)
EXTERNAL_MIN_BYTES = 1024  # smaller initializers stay inside each graph
ALIGN = 4096
FP16_MIN_ELEMENTS = 1024  # fp16 exports keep smaller tensors (norm gains, biases) in float32


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


def build_graphs(policy: Policy, steps: int | None, rti: RTISettings) -> dict[str, PolicyGraph]:
    """The full, warm and first-chunk entry points of ``policy`` by file name (eval mode, experts
    cached for each schedule, one expert bank shared by all three)."""
    model = policy.model.eval()
    bank = ExpertBank(model)
    schedules = {
        FULL_FILE: (model.schedule(steps or policy.steps), False),
        WARM_FILE: (rti.for_model(model, steps or policy.steps), True),
        FIRST_FILE: (rti.first_for_model(model, steps or policy.steps), False),
    }
    return {name: PolicyGraph(policy, CachedSampler(model, sigmas, bank).eval(), warm=warm).eval() for name, (sigmas, warm) in schedules.items()}


def _export_graph(graph: PolicyGraph, policy: Policy, path: Path, exporter: str) -> onnx.ModelProto:
    """Export one entry point to ``path`` (weights inside) with ``exporter``; returns the model."""
    specs = graph_inputs(policy, graph.warm)
    args = tuple(torch.from_numpy(v).to(policy.device) for v in example_inputs(policy, graph.warm).values())
    names = dict(input_names=[name for name, _, _ in specs], output_names=["action"])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        if exporter == "dynamo":
            try:
                import onnxscript  # noqa: F401  (torch's dynamo exporter builds its graphs with it)
            except ImportError:
                raise DpError("the dynamo exporter needs onnxscript: pip install onnxscript (or use --exporter torchscript)") from None
            # optimize=False: the optimiser folds a weight's transpose in some graphs and not in others, which would
            # store both layouts; ONNX Runtime folds them when it loads the graph anyway
            torch.onnx.export(graph, args, str(path), opset_version=18, dynamo=True, external_data=False, optimize=False, verbose=False, **names)
        else:
            # torch < 2.5 has no `dynamo` argument (and only the TorchScript exporter)
            choice = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
            torch.onnx.export(graph, args, str(path), opset_version=OPSET, **names, **choice)
    return onnx.load(str(path))


def bypass_weight_identities(model: onnx.ModelProto) -> onnx.ModelProto:
    """Read initializers directly where the exporter put an Identity in between (TorchScript does for
    a weight used more than once), so that quantisation sees a constant matmul weight."""
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in weights and n.output[0] not in outputs}
    nodes = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in nodes:
        node.input[:] = [alias.get(i, i) for i in node.input]
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def to_fp16_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Store every float32 initializer of at least ``FP16_MIN_ELEMENTS`` values as float16, cast back
    to float32 by a Cast node (ONNX Runtime folds the casts when it loads the graph)."""
    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < FP16_MIN_ELEMENTS:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{init.name}.fp16")
        casts.append((init.name, half))
    for name, half in casts:
        graph.initializer.remove(next(i for i in graph.initializer if i.name == name))
        graph.initializer.append(half)
    nodes = [onnx.helper.make_node("Cast", [half.name], [name], to=onnx.TensorProto.FLOAT) for name, half in casts]
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old)
    return model


def to_int8(path: Path) -> onnx.ModelProto:
    """onnxruntime's dynamic quantisation of the matmuls with constant weights (int8, per tensor)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = path.with_suffix(".int8.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process (shape inference) is for static quantisation
    try:
        quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], extra_options={"MatMulConstBOnly": True})
    finally:
        root.setLevel(level)
    return onnx.load(str(out))


def write_shared(models: dict[str, onnx.ModelProto], folder: Path) -> None:
    """Save ``models`` (file name -> model, weights inside) into ``folder`` with every initializer of
    ``EXTERNAL_MIN_BYTES`` or more stored once in ``WEIGHTS_FILE`` (by content) as external data."""
    entries: dict[tuple, tuple[str, int, int]] = {}
    with open(folder / WEIGHTS_FILE, "wb") as weights:
        for file, model in models.items():
            graph = model.graph
            rename: dict[str, str] = {}
            kept: list[onnx.TensorProto] = []
            for init in graph.initializer:
                array = numpy_helper.to_array(init)
                if array.nbytes < EXTERNAL_MIN_BYTES:
                    kept.append(init)
                    continue
                data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
                key = (init.data_type, tuple(init.dims), hashlib.sha256(data).hexdigest())
                if key not in entries:
                    weights.write(b"\0" * (-weights.tell() % ALIGN))
                    entries[key] = (f"shared_weight_{len(entries)}", weights.tell(), len(data))
                    weights.write(data)
                name, offset, length = entries[key]
                if name not in rename.values():
                    tensor = onnx.TensorProto(name=name, data_type=init.data_type, dims=init.dims)
                    for key_, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(length))):
                        tensor.external_data.add(key=key_, value=value)
                    tensor.data_location = onnx.TensorProto.EXTERNAL
                    kept.append(tensor)
                rename[init.name] = name
            del graph.initializer[:]
            graph.initializer.extend(kept)
            for node in graph.node:
                node.input[:] = [rename.get(i, i) for i in node.input]
            for value in graph.input:
                value.name = rename.get(value.name, value.name)
            onnx.save(model, str(folder / file))


def reference_chunks(policy: Policy, feeds: dict[str, np.ndarray], sigmas: torch.Tensor, warm: bool) -> np.ndarray:
    """The uncached, routed torch model on graph inputs ``feeds``: (1, H, A) raw actions, not snapped."""
    model, norm = policy.model, policy.normalizer
    obs = {}
    for key in policy.obs_keys:
        value = feeds[key] if key in policy.image_keys else norm.normalize(key, feeds[key]).astype(np.float32)
        obs[key] = torch.from_numpy(value).to(policy.device)
    goal = {k: torch.from_numpy(feeds[k]).to(policy.device) for k in ("task_id", "lang_emb") if k in feeds}
    noise = torch.from_numpy(feeds["noise"]).to(policy.device)
    sigmas = sigmas.to(policy.device)
    with torch.no_grad():
        cond = model.encode(obs, **goal)
        if warm:
            guess = torch.from_numpy(norm.normalize(policy.action_key, feeds["guess"]).astype(np.float32)).to(policy.device)
            x = warm_sample(model, cond, guess, noise, sigmas)
        else:
            x = ddim_sample(lambda x, s: model.edm.denoise(model.net, cond, x, s)[0], noise * sigmas[0], sigmas)
    return norm.unnormalize(policy.action_key, x.cpu().numpy()).astype(np.float32)


def check_against_torch(policy: Policy, path: Path, sigmas: torch.Tensor, warm: bool, tolerance: float = 1e-4, trials: int = 3) -> float:
    """Run the exported file in ONNX Runtime and the uncached, routed torch model on ``trials`` random
    inputs; a DpError if a continuous action dimension differs by more than ``tolerance`` (relative to
    the action scale) or a discrete one has another sign (where torch is not within the tolerance of
    0). Returns the largest difference in the continuous dimensions."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    continuous = [d for d in range(policy.action_dim) if d not in policy.discrete_dims]
    worst = 0.0
    for trial in range(trials):
        feeds = example_inputs(policy, warm, seed=1 + trial)
        got = session.run(None, feeds)[0]
        want = reference_chunks(policy, feeds, sigmas, warm)
        scale = max(1.0, float(np.abs(want).max()))
        diff = float(np.abs(got - want)[..., continuous].max()) if continuous else 0.0
        if not diff <= tolerance * scale:
            raise DpError(f"{path.name}: ONNX Runtime and the torch model disagree by {diff:.3g} (tolerance {tolerance * scale:.3g}); the export is wrong")
        grip = want[..., policy.discrete_dims]
        clear = np.abs(grip) > tolerance * scale
        if np.any((np.sign(grip) != got[..., policy.discrete_dims]) & clear):
            raise DpError(f"{path.name}: ONNX Runtime and the torch model choose another sign for a discrete action dimension; the export is wrong")
        worst = max(worst, diff)
    return worst


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


def build_spec(policy: Policy, graphs: dict[str, PolicyGraph], rti: RTISettings, control_freq: float | None, source: str, precision: str, exporter: str) -> dict[str, Any]:
    """The ``policy.yaml`` content (without file hashes and check results)."""
    cfg, data = policy.cfg, policy.cfg.data
    full, warm, first = (graphs[name] for name in GRAPH_FILES)
    io = {}
    for name, graph in graphs.items():
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
        "first": {"steps": rti.first_steps, "sigma_start": rti.first_sigma, "sigmas": first.sampler.sigmas},
        "precision": precision,
        "exporter": exporter,
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
    precision: str = "fp32",
    exporter: str = "torchscript",
) -> dict[str, Any]:
    """Write the three graphs, ``policy.weights`` and ``policy.yaml`` into folder ``out``; returns the spec.

    ``progress``: an optional callable ``progress(stage)`` told when each of the 5 stages is done.
    """
    if precision not in PRECISIONS:
        raise DpError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if exporter not in EXPORTERS:
        raise DpError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rti = rti or RTISettings()
    step = progress or (lambda _stage: None)
    graphs = build_graphs(policy, steps, rti)
    step("experts cached")
    models = {}
    with tempfile.TemporaryDirectory(prefix="dp-export-") as tmp:
        for name, graph in graphs.items():
            path = Path(tmp) / name
            models[name] = bypass_weight_identities(_export_graph(graph, policy, path, exporter))
            if precision == "fp16":
                models[name] = to_fp16_weights(models[name])
            elif precision == "int8":
                onnx.save(models[name], str(path))
                models[name] = to_int8(path)
        step("graphs exported")
        write_shared(models, out)
    for name in GRAPH_FILES:
        try:
            onnx.checker.check_model(str(out / name), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise DpError(f"{name}: the exported graph does not pass the ONNX checker: {exc}") from exc
    step("weights shared")
    check = {name: check_against_torch(policy, out / name, torch.tensor(graph.sampler.sigmas), graph.warm, CHECK_TOLERANCE[precision])
             for name, graph in graphs.items()}
    step("graphs match torch")
    if control_freq is None:
        control_freq = _control_freq(policy)
    spec = build_spec(policy, graphs, rti, control_freq, source, precision, exporter)
    spec["check"] = {"max_abs_diff_vs_torch": {name: float(f"{diff:.3g}") for name, diff in check.items()}, "tolerance": CHECK_TOLERANCE[precision]}
    spec["files"] = {name: {"sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size} for name in (*GRAPH_FILES, WEIGHTS_FILE)}
    (out / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False, width=120, default_flow_style=None))
    step(f"{SPEC_FILE} written")
    return spec
