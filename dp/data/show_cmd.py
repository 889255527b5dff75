"""Preview one episode of a store: an MP4 of its cameras side by side above its actions plotted
over time (a cursor marks the current step), or a PNG contact sheet (frames spread over the
episode, one row per camera, the action plot below with the sampled steps marked).

  dp show data/lift.zarr --episode 0 --out ep0.mp4
  dp show data/lift.zarr --episode 3 --out ep3.png
  dp show data/pusht.zarr --episode 0 --out pusht0.mp4          (Push-T: the top view, target x / y)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dp.data.store import EpisodeStore
from dp.data.video import write_mp4
from dp.errors import DpError

ACTION_LABELS = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
XY_LABELS = ["target x", "target y"]  # Push-T: the agent's target position in pixels
PANEL = 256  # pixels per camera view in the video
EXAMPLE = "dp show data/lift.zarr --episode 0 --out lift_ep0.mp4"  # ends `dp show --help`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", type=Path, help="episode store (a .zarr directory)")
    parser.add_argument("--episode", type=int, default=0, help="episode index (default 0; negative counts from the end)")
    parser.add_argument("--out", type=Path, required=True, help="output file: .mp4 (video) or .png (contact sheet)")
    parser.add_argument("--action-key", default=None, help="action key to plot (default: the store's action role)")
    parser.add_argument("--frames", type=int, default=8, help="frames per camera on a contact sheet (default 8)")
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")


def run(args: argparse.Namespace) -> int:
    suffix = args.out.suffix.lower()
    if suffix not in (".mp4", ".png"):
        raise DpError(f"--out {args.out}: the file must end in .mp4 (video) or .png (contact sheet)")
    with EpisodeStore.open(args.store, mode="r") as store:
        n = len(store)
        if not -n <= args.episode < n:
            raise DpError(f"{args.store}: no episode {args.episode} (the store has {n})")
        roles = store.roles
        action_key = args.action_key or (roles["action"][0] if roles["action"] else None)
        if action_key is None or action_key not in store.keys:
            raise DpError(f"{args.store}: no action key to plot (keys: {', '.join(store.keys)}); pass --action-key")
        image_keys = [k for k in roles["image"] if k in store.keys]
        episode = store.get_episode(args.episode, keys=[*image_keys, action_key])
        meta = store.episode_meta(args.episode)
        fps = float(store.control_freq or 20.0)
    actions = episode[action_key].reshape(len(episode[action_key]), -1).astype(np.float32)
    images = {k: _as_rgb(episode[k], k) for k in image_keys}
    title = f"{args.store.name} episode {args.episode % n}: {meta.get('task', '?')}" + (
        f" ({'success' if meta['success'] else 'failure'})" if "success" in meta else ""
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".mp4":
        write_video(args.out, images, actions, fps, title)
    else:
        write_sheet(args.out, images, actions, fps, title, args.frames)
    report = {"out": str(args.out), "episode": args.episode % n, "frames": len(actions), "cameras": image_keys, "meta": _jsonable(meta)}
    print(json.dumps(report, indent=2) if args.json else f"wrote {args.out} ({len(actions)} frames, cameras: {', '.join(image_keys) or 'none'})")
    return 0


def _as_rgb(frames: np.ndarray, key: str) -> np.ndarray:
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise DpError(f"image key {key!r}: expected (T, H, W, C) frames, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return frames[..., :3]


def _jsonable(meta: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in meta.items()}


def action_plot(actions: np.ndarray, width: int, height: int, fps: float, title: str, marks: list[int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """The actions over time as an RGB image, and the pixel columns of the first and last step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpi = 100
    fig, ax = plt.subplots(figsize=(width / dpi, height / dpi), dpi=dpi)
    steps = np.arange(len(actions))
    labels = next((names for names in (ACTION_LABELS, XY_LABELS) if len(names) == actions.shape[1]),
                  [f"a{i}" for i in range(actions.shape[1])])
    for i, label in enumerate(labels):
        ax.plot(steps, actions[:, i], lw=1.2, label=label, ls="--" if label == "gripper" else "-")
    for t in marks or []:
        ax.axvline(t, color="0.6", lw=0.8)
    ax.set_xlim(0, max(1, len(actions) - 1))
    ax.set_xlabel(f"step ({fps:g} Hz)")
    ax.set_ylabel("action")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7, ncol=len(labels))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    box = ax.get_window_extent()
    plt.close(fig)
    return rgb, (int(round(box.x0)), int(round(box.x1)))


def write_video(path: Path, images: dict[str, np.ndarray], actions: np.ndarray, fps: float, title: str) -> None:
    """MP4: cameras side by side (each scaled to :data:`PANEL` pixels) above the action plot with a cursor."""
    import cv2

    width = PANEL * max(1, len(images))
    plot, (x0, x1) = action_plot(actions, width, 220, fps, title)
    plot = cv2.resize(plot, (width, 220)) if plot.shape[1] != width else plot
    frames = []
    for t in range(len(actions)):
        panel = plot.copy()
        x = int(round(x0 + (x1 - x0) * t / max(1, len(actions) - 1)))
        cv2.line(panel, (x, 0), (x, panel.shape[0] - 1), (220, 30, 30), 2)
        if images:
            views = [cv2.resize(frames_[t], (PANEL, PANEL), interpolation=cv2.INTER_NEAREST) for frames_ in images.values()]
            frames.append(np.concatenate([np.concatenate(views, axis=1), panel], axis=0))
        else:
            frames.append(panel)
    write_mp4(path, frames, fps)


def write_sheet(path: Path, images: dict[str, np.ndarray], actions: np.ndarray, fps: float, title: str, columns: int) -> None:
    """PNG: ``columns`` frames spread over the episode for each camera, the action plot below."""
    import cv2

    picks = sorted(set(np.linspace(0, len(actions) - 1, max(1, columns)).round().astype(int).tolist()))
    cell = 128
    width = cell * len(picks)
    rows = []
    for key, frames in images.items():
        row = np.concatenate([cv2.resize(frames[t], (cell, cell), interpolation=cv2.INTER_AREA) for t in picks], axis=1)
        label = np.full((18, width, 3), 255, np.uint8)
        cv2.putText(label, f"{key}: steps {', '.join(map(str, picks))}", (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        rows += [label, row]
    plot, _ = action_plot(actions, max(width, 640), 240, fps, title, marks=picks)
    if rows and plot.shape[1] != width:
        plot = cv2.resize(plot, (width, int(round(240 * width / plot.shape[1]))), interpolation=cv2.INTER_AREA)
    sheet = np.concatenate([*rows, plot], axis=0)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise DpError(f"{path}: opencv could not write the PNG")
