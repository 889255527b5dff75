"""Post-processing of exported ONNX graphs: weight precision, and one weights file shared by several graphs.

Weights are stored once: every initializer of 1 KiB or more goes into ``policy.weights`` once
(identical tensors, found by content, within and across graphs, become one entry, 4 KiB-aligned so
that ONNX Runtime can map it) and the graphs reference it as ONNX external data. Hand-written because
neither exporter nor ``onnx.external_data_helper`` shares one data file between models.

Precision: ``fp16`` stores the large weights as float16, cast back to float32 when ONNX Runtime loads
the graph (half the size, float32 arithmetic: the CPU provider has few float16 kernels); ``int8`` is
onnxruntime's dynamic quantisation (``quantize_dynamic``: int8 weights for the matmuls with constant
weights, activations quantised per call).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from dp.infer.export_format import WEIGHTS_FILE

EXTERNAL_MIN_BYTES = 1024  # smaller initializers stay inside each graph
ALIGN = 4096
FP16_MIN_ELEMENTS = 1024  # fp16 exports keep smaller tensors (norm gains, biases) in float32


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
