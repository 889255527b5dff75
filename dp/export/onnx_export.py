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

Weights are stored once: each graph is exported on its own, then their weights go into one shared
``policy.weights`` file (:mod:`dp.export.onnx_weights`, which also does the ``fp16`` and ``int8``
precisions). The normalisation is the model's own module
(:class:`dp.models.normalization.Normalization`), traced into each graph.

Exporter: ``torchscript`` (``torch.onnx.export(dynamo=False)``, deprecated but present in torch
2.4-2.14) by default, ``dynamo`` (torch's current exporter; needs ``onnxscript``) on request. Both
express these graphs and match torch to ~1e-6, but the dynamo exporter takes ~8x longer on them
(torch.export traces every unrolled op, then each is translated: 52 s against 6.6 s for the 10-step
``tiny`` full graph on a busy 2-core machine), which the tests and ``dp quickstart`` cannot afford yet. ``tests/test_infer_onnx.py`` exports with
both and fails when the TorchScript exporter is gone, so that the default moves then.

Self-check: every graph is run in ONNX Runtime on several random inputs and compared with the
uncached, routed torch model (the router, all experts, the sampler loop; :mod:`dp.export.export_check`).
"""

from __future__ import annotations

import datetime
import inspect
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import yaml
from torch import nn

from dp.errors import DpError
from dp.infer.caching import CachedSampler, ExpertBank
from dp.export.export_check import CHECK_TOLERANCE, check_against_torch
from dp.infer.export_format import (
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
from dp.export.graph_inputs import example_inputs, graph_inputs
from dp.export.onnx_weights import bypass_weight_identities, to_fp16_weights, to_int8, write_shared
from dp.infer.policy import Policy
from dp.infer.rti import RTISettings

OPSET = 17  # TorchScript exporter; the dynamo exporter writes opset 18, its lowest
EXPORTERS = ("torchscript", "dynamo")


class PolicyGraph(nn.Module):
    """Raw observations + goal + noise (+ raw guess) -> raw action chunk (1, H, A), discrete dims snapped.

    Takes the inputs :func:`dp.export.graph_inputs.graph_inputs` lists, in that order; normalises
    through the model's own normaliser (traced, not copied).
    """

    def __init__(self, policy: Policy, sampler: CachedSampler, warm: bool):
        super().__init__()
        self.model = policy.model
        self.sampler = sampler
        self.warm = warm
        self.lowdim_keys, self.image_keys = list(policy.lowdim_keys), list(policy.image_keys)
        self.goal_kind = policy.cfg.model.goal
        mask = torch.zeros(policy.action_dim, dtype=torch.bool)
        mask[policy.discrete_dims] = True
        self.register_buffer("discrete", mask)
        low, high = (torch.zeros(policy.action_dim) for _ in range(2))
        low[policy.discrete_dims], high[policy.discrete_dims] = (torch.from_numpy(v) for v in policy.discrete_levels)
        self.register_buffer("low", low)
        self.register_buffer("high", high)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        values = list(inputs)
        obs = {key: values.pop(0) for key in [*self.lowdim_keys, *self.image_keys]}
        goal = {}
        if self.goal_kind in ("task", "lang"):
            goal["task_id" if self.goal_kind == "task" else "lang_emb"] = values.pop(0)
        noise = values.pop(0)
        cond = self.model.encode(self.model.observation_batch(obs), **goal)
        sigma0 = self.sampler.sigmas[0]
        if self.warm:
            x = self.model.normalize_action(values.pop(0)) + sigma0 * noise
        else:
            x = noise * sigma0
        action = self.model.unnormalize_action(self.sampler(cond, x))
        return torch.where(self.discrete, torch.where(action >= (self.low + self.high) / 2, self.high, self.low), action)


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
            "n_action_steps": policy.default_action_steps,
            "task_n_action_steps": dict(policy.task_action_steps),
            "discrete_dims": list(policy.discrete_dims),
        },
        "control_freq": control_freq,
        "sampler": {
            "steps": full.sampler.n_steps,
            "schedule": cfg.diffusion.schedule,
            "solver": cfg.diffusion.solver,
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
