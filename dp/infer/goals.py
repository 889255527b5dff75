"""The goal lookup both runtimes use: an instruction (a task name or its text) -> the goal input.

Numpy only (no torch here: robots import this).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dp.errors import DpError


def known_goals(tasks: list[str], instructions: dict[str, str]) -> str:
    """The goals a policy knows, for error messages: ``'task' ('instruction'), ...`` or "none"."""
    return ", ".join(f"{t!r} ({instructions[t]!r})" if t in instructions else repr(t) for t in tasks) or "none"


def goal_task(instruction: str | None, tasks: list[str], instructions: dict[str, str]) -> str | None:
    """The task ``instruction`` names (a task name or its stored instruction; none: a single-task
    policy's task), or None for any other instruction."""
    if instruction is None:
        return tasks[0] if len(tasks) == 1 else None
    if instruction in tasks:
        return instruction
    return {text: task for task, text in instructions.items()}.get(instruction)


def resolve_goal(
    kind: str,
    instruction: str | None,
    tasks: list[str],
    instructions: dict[str, str],
    embeddings: dict[str, np.ndarray],
    embed_new: Callable[[str, str], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The goal input for ``instruction`` (a task name or its instruction): ``{"task_id": (1,) int64}``,
    ``{"lang_emb": (1, E) float32}`` or ``{}``; a DpError lists the known goals when it is unknown.

    ``embed_new(instruction, known)``: the (E,) embedding of a language instruction with no stored
    embedding (a runtime embeds it as the training data was); without it such an instruction is an error.
    """
    if kind == "none":
        return {}
    known = known_goals(tasks, instructions)
    if kind == "task":
        task = goal_task(instruction, tasks, instructions)
        if task is None and instruction is None:
            raise DpError(f"this policy was trained on several tasks; reset(instruction) must name one of: {known}")
        if task is None:
            raise DpError(f"unknown instruction {instruction!r}; this policy knows: {known}")
        return {"task_id": np.array([tasks.index(task)], dtype=np.int64)}
    key = instruction
    if key is None and len(embeddings) == 1:
        key = next(iter(embeddings))
    elif key is not None and key not in embeddings:
        key = instructions.get(key, key)  # a task name -> its instruction
    if key in embeddings:
        return {"lang_emb": np.asarray(embeddings[key], dtype=np.float32)[None]}
    if instruction is None:
        raise DpError(f"this policy was trained on several instructions; reset(instruction) must give one; it knows: {known}")
    if instruction in tasks:
        raise DpError(f"no language embedding for task {instruction!r}; this policy knows: {known}")
    if embed_new is None:
        raise DpError(f"no language embedding for instruction {instruction!r}; this policy knows: {known}")
    return {"lang_emb": np.asarray(embed_new(instruction, known), dtype=np.float32)[None]}
