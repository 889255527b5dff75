"""Explicit devices (dp.devices): the device parser, ONNX Runtime providers, the trainer's processes
per GPU, and the one-line errors of the commands. This machine has no GPU (and tests/conftest.py
hides any): the CUDA paths are checked by their refusals here, and with a simulated device count."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from dp import devices
from dp.cli import main as dp_main
from dp.config import build_config
from dp.devices import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    TENSORRT_PROVIDER,
    check_local_processes,
    check_providers,
    onnx_providers,
    onnx_session,
    parse_device,
    torch_device,
)
from dp.errors import DpError
from dp.infer.export_format import GRAPH_FILES
from dp.infer.load import load_policy
from dp.infer.onnx_policy import OnnxPolicy
from dp.testing.reach_store import make_store
from dp.train import trainer as trainer_mod
from dp.train.distributed import init_distributed

NO_CUDA = "this machine has no CUDA device (available: cpu)"


@pytest.fixture
def cpu_onnxruntime(monkeypatch):
    """ONNX Runtime's providers without GPU ones: this machine's as they are; a GPU machine's with
    onnxruntime-gpu as a CPU build, so that the tests pass unchanged there."""
    import onnxruntime as ort

    cpu_only = [p for p in ort.get_available_providers() if p not in (CUDA_PROVIDER, TENSORRT_PROVIDER)]
    monkeypatch.setattr(devices, "_installed_providers", lambda: cpu_only)


@pytest.fixture
def one_gpu(monkeypatch):
    """A simulated machine with one CUDA device (cuda:0) and ONNX Runtime's CUDA provider."""
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(devices, "_installed_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER])


def test_parse_device_accepts_the_forms_and_refuses_others():
    assert [parse_device(s) for s in ("cpu", "cuda", "cuda:3", "mps", "auto")] == [
        ("cpu", None), ("cuda", None), ("cuda", 3), ("mps", None), ("auto", None)]
    for bad in ("gpu", "CUDA", "cuda:", "cuda:-1", "cuda:1x", "cpu:0", "mps:1", " cpu", ""):
        with pytest.raises(DpError, match=r"expected cpu, cuda, cuda:N, mps or auto") as err:
            parse_device(bad)
        assert repr(bad) in str(err.value)


def test_torch_device_on_this_machine():
    assert not torch.cuda.is_available()  # conftest pins the CPU
    assert torch_device("cpu") == "cpu" and torch_device("auto") == "cpu"
    for spec in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(DpError) as err:
            torch_device(spec)
        assert str(err.value) == f"--device {spec}: {NO_CUDA}"
    if not torch.backends.mps.is_available():
        with pytest.raises(DpError, match=r"^--device mps: MPS is not available on this machine \(available: cpu\)$"):
            torch_device("mps")


def test_torch_device_with_a_simulated_gpu(one_gpu):
    assert torch_device("auto") == torch_device("cuda") == torch_device("cuda:0") == "cuda:0"
    with pytest.raises(DpError) as err:
        torch_device("cuda:1")
    assert str(err.value) == "--device cuda:1: this machine has 1 CUDA device (cuda:0)"


def test_onnx_providers_default_to_the_cpu_and_refuse_a_missing_cuda_provider(cpu_onnxruntime):
    assert onnx_providers() == onnx_providers("cpu") == onnx_providers("auto") == [CPU_PROVIDER]
    with pytest.raises(DpError) as err:
        onnx_providers("cuda")
    assert str(err.value).startswith(f"--device cuda: ONNX Runtime here has no {CUDA_PROVIDER} (installed: ")
    assert "install onnxruntime-gpu" in str(err.value)
    with pytest.raises(DpError, match="no MPS provider"):
        onnx_providers("mps")
    with pytest.raises(DpError, match="TensorRT runs on a CUDA device"):
        onnx_providers("cpu", tensorrt=True)
    with pytest.raises(DpError, match=f"no {TENSORRT_PROVIDER}"):
        check_providers([TENSORRT_PROVIDER, CPU_PROVIDER])
    with pytest.raises(DpError, match="no ONNX Runtime provider named"):
        check_providers([])


def test_onnx_providers_derived_for_a_simulated_gpu(one_gpu, monkeypatch):
    cuda0 = (CUDA_PROVIDER, {"device_id": 0})
    assert onnx_providers("cuda") == onnx_providers("auto") == [cuda0, CPU_PROVIDER]
    with pytest.raises(DpError, match=r"^--device cuda:1: this machine has 1 CUDA device \(cuda:0\)$"):
        onnx_providers("cuda:1")
    with pytest.raises(DpError, match=f"no {TENSORRT_PROVIDER}"):
        onnx_providers("cuda", tensorrt=True)
    monkeypatch.setattr(devices, "_installed_providers", lambda: [TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER])
    assert onnx_providers("cuda", tensorrt=True) == [(TENSORRT_PROVIDER, {"device_id": 0}), cuda0, CPU_PROVIDER]


def test_onnx_session_runs_on_the_cpu_provider_and_names_an_unloadable_graph(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "g.onnx")
    assert onnx_session(tmp_path / "g.onnx", [CPU_PROVIDER]).get_providers() == [CPU_PROVIDER]
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    with pytest.raises(DpError, match="bad.onnx: ONNX Runtime cannot load it"):
        onnx_session(tmp_path / "bad.onnx", [CPU_PROVIDER])


def test_onnx_policy_refuses_cuda_before_reading_the_folder(tmp_path, cpu_onnxruntime):
    """The providers are checked first: the folder (here: none) is not read."""
    for kwargs in ({"device": "cuda"}, {"providers": [CUDA_PROVIDER, CPU_PROVIDER]}):
        with pytest.raises(DpError, match=f"no {CUDA_PROVIDER}"):
            OnnxPolicy.load(tmp_path / "missing", **kwargs)
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "policy.onnx").write_bytes(b"")  # an export by its name; nothing else is there to read
    with pytest.raises(DpError, match=f"^--device cuda: ONNX Runtime here has no {CUDA_PROVIDER}"):
        load_policy(str(folder), device="cuda")


def test_commands_refuse_a_missing_device_in_one_line(tmp_path, capsys, cpu_onnxruntime):
    cases = [
        (["eval", "expert:lift", "--task", "lift", "--episodes", "1", "--device", "cuda"], f"--device cuda: {NO_CUDA}"),
        (["eval", "expert:lift", "--task", "lift", "--device", "gpu"], "--device 'gpu': expected cpu, cuda, cuda:N, mps or auto"),
        (["node", "--policy", "expert:lift", "--device", "cuda:1"], f"--device cuda:1: {NO_CUDA}"),
        (["export", str(tmp_path / "no_run"), "--out", str(tmp_path / "out"), "--device", "cuda"],
         f"--device cuda: ONNX Runtime here has no {CUDA_PROVIDER}"),
    ]
    for argv, message in cases:
        assert dp_main(argv) == 1
        out = capsys.readouterr()
        assert out.err.startswith(f"dp {argv[0]}: error: {message}") and out.err.count("\n") == 1, out.err
    assert not (tmp_path / "out").exists()


def test_train_nproc_above_the_gpu_count_is_refused_on_cuda(tmp_path, capsys):
    """On this machine (no GPU) two CUDA processes are refused before torchrun starts; CPU processes are not limited."""
    argv = ["train", "--data", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "run"), "--nproc", "2"]
    assert dp_main([*argv, "train.device=cuda"]) == 1
    err = capsys.readouterr().err
    assert err == (f"dp train: error: --nproc 2 with train.device=cuda: 2 processes need 2 CUDA devices (one each), "
                   f"{NO_CUDA}; train on the CPU (train.device=cpu)\n")
    assert not (tmp_path / "run").exists()
    check_local_processes("cpu", 4, "--nproc 4")
    check_local_processes("auto", 4, "--nproc 4")  # auto without a GPU: CPU processes
    with pytest.raises(DpError, match="MPS trains in one process"):
        check_local_processes("mps", 2, "--nproc 2")


def test_train_processes_per_gpu_with_a_simulated_gpu(one_gpu, monkeypatch):
    for device in ("cuda", "auto"):
        with pytest.raises(DpError, match=r"2 processes need 2 CUDA devices \(one each\), this machine has 1 CUDA device \(cuda:0\); "
                                          r"run at most 1 on CUDA, or train on the CPU"):
            check_local_processes(device, 2, "--nproc 2")
    check_local_processes("cuda", 1, "--nproc 1")
    # under torchrun: refused before the process group, not by a missing cuda:1
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(DpError, match="^train.device=cuda with 2 training processes on this machine: 2 processes need 2"):
        init_distributed("cuda")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A one-step `tiny` run on train.device=auto (the CPU here) and its summary row."""
    root = tmp_path_factory.mktemp("tiny")
    store = make_store(root / "s.zarr", episodes=2, length=12)
    cfg = build_config("tiny", ["train.steps=1", "train.device=auto"])
    return root / "run", trainer_mod.train(cfg, [str(store)], root / "run", progress=False)


@pytest.mark.slow
def test_training_records_the_device_and_precision_that_ran(tiny_run):
    run, summary = tiny_run
    start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    precision = "bf16-autocast" if trainer_mod.cpu_has_amx() else "fp32"
    assert (start["event"], start["device"], start["precision"]) == ("start", "cpu", precision)
    assert (summary["device"], summary["precision"]) == ("cpu", precision)
    assert not trainer_mod.bf16_autocast_pays(torch.device("mps"))


@pytest.mark.slow
def test_export_checks_the_graphs_on_the_devices_providers(tiny_run, tmp_path, monkeypatch, capsys):
    """`dp export --device D` checks every graph again on D's providers; simulated here by CPU
    providers in the (name, options) form a CUDA device gets."""
    from dp.export import export_cmd

    run, _ = tiny_run
    monkeypatch.setattr(export_cmd, "onnx_providers", lambda device: [(CPU_PROVIDER, {})])
    assert dp_main(["export", str(run), "--out", str(tmp_path / "out"), "--device", "cuda", "--json"]) == 0
    check = json.loads(capsys.readouterr().out)["device_check"]
    assert check["providers"] == [CPU_PROVIDER] and sorted(check["max_abs_diff_vs_torch"]) == sorted(GRAPH_FILES)
    assert all(0 <= diff < 1e-3 for diff in check["max_abs_diff_vs_torch"].values())
