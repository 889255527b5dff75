"""The exported policy folder's format: its file names, format name and version, and its checks.

An exported folder (written by :mod:`dp.export.onnx_export`, read by :mod:`dp.infer.onnx_policy`) holds
three entry points (full sampling, RTI warm start, short first chunk) whose weights live once in
WEIGHTS_FILE (ONNX external data shared by all three), and the description SPEC_FILE. Version 2 added
the first-chunk graph and the shared weights file; version 1 folders are refused with a request to
re-export. No torch here: robots import this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dp.errors import DpError
from dp.files import read_yaml, sha256_file

FULL_FILE, WARM_FILE, FIRST_FILE, SPEC_FILE = "policy.onnx", "policy_warm.onnx", "policy_first.onnx", "policy.yaml"
WEIGHTS_FILE = "policy.weights"
GRAPH_FILES = (FULL_FILE, WARM_FILE, FIRST_FILE)
EXPORT_FILES = (*GRAPH_FILES, WEIGHTS_FILE, SPEC_FILE)
SPEC_FORMAT, SPEC_VERSION = "dp-onnx-policy", 2
PRECISIONS = ("fp32", "fp16", "int8")
SPEC_SECTIONS = ("observation", "action", "goal", "files", "graphs", "rti", "first", "sampler")


def read_spec(folder: Path) -> dict[str, Any]:
    """``policy.yaml`` of an exported folder, checked for format, keys, and the sha256 of its graphs."""
    if not folder.is_dir():
        raise DpError(f"{folder}: no such exported policy folder")
    path = folder / SPEC_FILE
    if not path.is_file():
        raise DpError(f"{folder}: no {SPEC_FILE} (not an exported policy folder; create one with `dp export RUN --out {folder}`)")
    spec = read_yaml(path)
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        raise DpError(f"{path}: not an exported policy description (format {SPEC_FORMAT!r} expected)")
    if spec.get("version") != SPEC_VERSION:
        raise DpError(f"{path}: export format version {spec.get('version')!r}, this runtime reads version {SPEC_VERSION} "
                      f"(one weights file shared by three graphs); re-export the policy with `dp export`")
    for section in SPEC_SECTIONS:
        if not isinstance(spec.get(section), dict):
            raise DpError(f"{path}: section {section!r} is missing")
    check_files(folder, spec)
    return spec


def check_files(folder: Path, spec: dict[str, Any]) -> None:
    """A DpError unless every graph and the weights file are present with the sha256 ``spec`` records."""
    path = folder / SPEC_FILE
    for name in (*GRAPH_FILES, WEIGHTS_FILE):
        entry = spec["files"].get(name)
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise DpError(f"{path}: no sha256 recorded for {name}")
        file = folder / name
        if not file.is_file():
            raise DpError(f"{file}: missing (the folder is incomplete; re-export with `dp export`)")
        if sha256_file(file) != entry["sha256"]:
            raise DpError(f"{file}: sha256 differs from {SPEC_FILE} (a file from another export or a damaged copy); re-export the folder")
