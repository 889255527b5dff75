"""Devices: the one parser of a device string (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``auto``) for
torch and for ONNX Runtime.

``torch_device`` checks a device against this machine's torch (``auto``: ``cuda:0`` if torch sees a
CUDA device, else ``cpu``); ``onnx_providers`` turns one into ONNX Runtime execution providers and
checks them against those installed. Both raise a one-line DpError naming the device and what is
available, so a command fails before it does any work. torch and onnxruntime are imported only when
a device other than ``cpu`` is asked for (an exported policy runs without torch).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from typing import Any

from dp.errors import DpError

DEVICE_FORMS = "cpu, cuda, cuda:N, mps or auto"
_DEVICE = re.compile(r"(cpu|mps|auto|cuda)(?::(\d+))?")
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"


def add_device_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """The ``--device`` flag of a command; ``what`` says what the device is for."""
    parser.add_argument("--device", default="cpu", help=f"{what}: {DEVICE_FORMS} (auto: cuda if there is one, else cpu; default cpu)")


def parse_device(spec: str, what: str = "--device") -> tuple[str, int | None]:
    """``spec`` as (kind, index): kind is cpu, cuda, mps or auto, index N only for ``cuda:N``. Syntax
    only: nothing is imported or probed. ``what`` names the setting in the error (a flag, a key)."""
    match = _DEVICE.fullmatch(spec) if isinstance(spec, str) else None
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise DpError(f"{what} {spec!r}: expected {DEVICE_FORMS}")
    return match.group(1), None if match.group(2) is None else int(match.group(2))


def cuda_device_count() -> int | None:
    """The CUDA devices torch sees (``CUDA_VISIBLE_DEVICES`` applies); None without torch installed."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def describe_cuda(count: int) -> str:
    """``count`` CUDA devices in words, naming them: "1 CUDA device (cuda:0)"."""
    if count == 0:
        return "no CUDA device (available: cpu)"
    names = ", ".join(f"cuda:{i}" for i in range(count))
    return f"{count} CUDA device{'s' if count > 1 else ''} ({names})"


def torch_device(spec: str, what: str = "--device") -> str:
    """The torch device ``spec`` names on this machine: ``cpu``, ``cuda:N`` (``cuda`` is ``cuda:0``)
    or ``mps``; ``auto`` is ``cuda:0`` if torch sees a CUDA device, else ``cpu``. A DpError when
    that device is not here."""
    kind, index = parse_device(spec, what)
    if kind == "cpu":
        return "cpu"
    count = cuda_device_count()
    if count is None:
        raise DpError(f"{what} {spec}: torch is not installed here")
    if kind == "auto":
        return "cuda:0" if count else "cpu"
    if kind == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise DpError(f"{what} mps: MPS is not available on this machine ({_available_torch(count)})")
        return "mps"
    index = index or 0
    if index >= count:
        raise DpError(f"{what} {spec}: this machine has {describe_cuda(count)}")
    return f"cuda:{index}"


def _available_torch(count: int) -> str:
    return "available: " + ", ".join(["cpu", *(f"cuda:{i}" for i in range(count))])


def check_local_processes(device: str, processes: int, what: str) -> None:
    """A DpError when ``processes`` training processes on this machine cannot each have a device of
    ``device`` (a train.device): on CUDA (``auto`` included, where a GPU is seen) each takes its own
    GPU, and MPS runs one process (DDP has no MPS backend). ``what`` says how the processes were asked for."""
    kind, _ = parse_device(device, "train.device")
    if kind == "mps" and processes > 1:
        raise DpError(f"{what}: MPS trains in one process (DDP has no MPS backend); train on the CPU (train.device=cpu) for several")
    if kind not in ("cuda", "auto"):
        return
    count = cuda_device_count() or 0
    if (kind == "cuda" or count) and processes > count:  # auto without a GPU trains on the CPU
        fewer = f"run at most {count} on CUDA, or " if count else ""
        raise DpError(f"{what}: {processes} processes need {processes} CUDA devices (one each), this machine has "
                      f"{describe_cuda(count)}; {fewer}train on the CPU (train.device=cpu)")


def onnx_providers(spec: str = "cpu", tensorrt: bool = False, what: str = "--device") -> list[Any]:
    """ONNX Runtime execution providers for device ``spec``, most preferred first: ``cpu`` -> CPU;
    ``cuda[:N]`` -> CUDA on device N, then CPU (TensorRT before them with ``tensorrt``); ``auto`` ->
    cuda when ONNX Runtime has its CUDA provider and torch sees a device, else cpu. MPS has no
    provider. A DpError when a provider is not installed or the device is not here."""
    kind, index = parse_device(spec, what)
    if kind == "auto":
        kind = "cuda" if CUDA_PROVIDER in _installed_providers() and cuda_device_count() else "cpu"
    if kind == "mps":
        raise DpError(f"{what} mps: ONNX Runtime has no MPS provider; run exported policies with --device cpu or cuda")
    if kind == "cpu":
        if tensorrt:
            raise DpError(f"{what} {spec}: TensorRT runs on a CUDA device (--device cuda)")
        return [CPU_PROVIDER]
    options = {"device_id": index or 0}
    providers = [*([(TENSORRT_PROVIDER, options)] if tensorrt else []), (CUDA_PROVIDER, options), CPU_PROVIDER]
    check_providers(providers, f"{what} {spec}")
    count = cuda_device_count()  # None without torch: ONNX Runtime finds out when the session starts
    if count is not None and (index or 0) >= count:
        raise DpError(f"{what} {spec}: this machine has {describe_cuda(count)}")
    return providers


def provider_names(providers: list[Any]) -> list[str]:
    """The names in an ONNX Runtime providers list (names, or (name, options) pairs)."""
    return [p if isinstance(p, str) else p[0] for p in providers]


def check_providers(providers: list[Any], what: str = "providers") -> None:
    """A DpError naming the first of ``providers`` that this ONNX Runtime does not have."""
    installed = _installed_providers()
    names = provider_names(providers)
    if not names:
        raise DpError(f"{what}: no ONNX Runtime provider named")
    for name in names:
        if name not in installed:
            hint = "; install onnxruntime-gpu" if name in (CUDA_PROVIDER, TENSORRT_PROVIDER) else ""
            raise DpError(f"{what}: ONNX Runtime here has no {name} (installed: {', '.join(installed)}){hint}")


def onnx_session(path: Any, providers: list[Any], options: Any = None) -> Any:
    """An ONNX Runtime session of the graph at ``path`` on ``providers``; a DpError when ONNX Runtime
    cannot load it or did not start one of the providers (it would quietly fall back to the CPU)."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise DpError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
    missing = [name for name in provider_names(providers) if name not in session.get_providers()]
    if missing:
        raise DpError(f"{path}: ONNX Runtime could not start {', '.join(missing)} (its libraries or the device are "
                      f"missing); it would run on {', '.join(session.get_providers())}")
    return session


def _installed_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())
