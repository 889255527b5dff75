"""Small synthetic datasets in the foreign formats, faithful to FORMATS.md, for tests and benchmarks.

Every generator is deterministic (same arguments, same bytes) and returns the arrays an import
should produce, in our keys, so a test can compare field by field:

- :func:`make_calvin_split`: a CALVIN split directory (per-frame npz, ep_start_end_ids.npy with
  inclusive ends, pickled lang annotations, statistics.yaml ...), float32 or float64 low-dim, emb
  (N, 1, 384) or (N, 384), any frame prefix and zero padding.
- :func:`make_libero_file`: one LIBERO task file (images stored upside down, as LIBERO does), or a
  robomimic-style file (env_args, mask/, next_obs/, simulator key names).
- :func:`make_dp_zarr`: a Diffusion Policy zarr-format-2 replay buffer shaped like Push-T.

Images are gradients with a moving square (optionally with sensor noise, for realistic compression).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

INSTRUCTIONS = [
    ("open the drawer", "open_drawer"),
    ("push the red block to the left", "push_red_left"),
    ("turn on the light bulb", "turn_on_lightbulb"),
    ("lift the blue block from the table", "lift_blue_block_table"),
]


def frame_image(index: int, size: int, channels: int = 3, salt: int = 0, noise: int = 0) -> np.ndarray:
    """A deterministic, camera-like uint8 frame; different for every (index, salt).

    ``noise`` adds sensor-like noise of that many grey levels, so the frame compresses about as
    badly as a real camera frame (benchmarks); 0 keeps it smooth (tests, small files).
    """
    yy, xx = np.mgrid[0:size, 0:size]
    base = (xx * (1 + salt % 3) + yy * 2 + index * 3 + salt * 17) % 256
    img = np.stack([(base + 40 * c) % 256 for c in range(channels)], axis=-1).astype(np.uint8)
    side = max(2, size // 6)
    x0 = (index * 5 + salt * 11) % max(1, size - side)
    y0 = (index * 3 + salt * 7) % max(1, size - side)
    img[y0 : y0 + side, x0 : x0 + side] = (200 + salt) % 256
    if noise:
        jitter = np.random.default_rng(index * 7919 + salt).integers(-noise, noise + 1, size=img.shape)
        img = np.clip(img.astype(np.int16) + jitter, 0, 255).astype(np.uint8)
    return img


def sentence_embedding(text: str, dim: int = 384) -> np.ndarray:
    """A fixed unit vector per text (stands in for SBERT in synthetic data)."""
    seed = int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little") ^ len(text)
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


# ====================================================================== CALVIN
@dataclass
class CalvinSplitInfo:
    """What :func:`make_calvin_split` wrote."""

    root: Path  # the split directory
    ranges: list[tuple[int, int]]  # inclusive
    annotations: list[tuple[int, int, str, str]]  # (start, end, instruction, task)
    emb: np.ndarray  # (N, 384)
    prefix: str
    digits: int
    sizes: dict[str, int] = field(default_factory=dict)

    def frame_path(self, index: int) -> Path:
        return self.root / f"{self.prefix}{index:0{self.digits}d}.npz"


def calvin_frame(index: int, *, static_size: int = 200, gripper_size: int = 84, dtype: Any = np.float32,
                 extras: bool = False, noise: int = 0) -> dict[str, np.ndarray]:
    """The npz fields of CALVIN frame ``index`` (deterministic); ``extras`` adds depth and tactile."""
    rng = np.random.default_rng(index)
    robot_obs = rng.normal(size=15)
    robot_obs[14] = 1.0 if (index // 7) % 2 else -1.0
    actions = rng.normal(size=7)
    actions[6] = robot_obs[14]
    rel = np.clip(rng.normal(size=7), -1, 1)
    rel[6] = actions[6]
    frame = {
        "rgb_static": frame_image(index, static_size, salt=1, noise=noise),
        "rgb_gripper": frame_image(index, gripper_size, salt=2, noise=noise),
        "robot_obs": robot_obs.astype(dtype),
        "scene_obs": rng.normal(size=24).astype(dtype),
        "actions": actions.astype(dtype),
        "rel_actions": rel.astype(dtype),
    }
    if extras:  # smooth depth maps, as a camera gives (noise would not compress like real data)
        frame["depth_static"] = (frame["rgb_static"][..., 0] / 255.0 + 0.5).astype(np.float32)
        frame["depth_gripper"] = (frame["rgb_gripper"][..., 0] / 255.0 + 0.1).astype(np.float32)
        frame["rgb_tactile"] = np.zeros((160, 120, 6), np.uint8)
        frame["depth_tactile"] = np.zeros((160, 120, 2), np.float32)
    return frame


def make_calvin_split(
    root: str | Path,
    *,
    split: str = "training",
    episode_lens: tuple[int, ...] = (30, 24),
    first_frame: int = 358_480,
    gap: int = 5,
    lang_len: int = 12,
    lang_per_episode: int = 2,
    static_size: int = 200,
    gripper_size: int = 84,
    dtype: Any = np.float32,
    emb_shape: str = "n1d",
    prefix: str = "episode_",
    digits: int = 7,
    extras: bool = False,
    noise: int = 0,
) -> CalvinSplitInfo:
    """Write ``root/<split>/`` as CALVIN does; ``emb_shape`` is ``"n1d"`` (N, 1, 384) or ``"nd"`` (N, 384)."""
    split_dir = Path(root) / split
    (split_dir / "lang_annotations").mkdir(parents=True, exist_ok=True)
    ranges, annotations = [], []
    start = first_frame
    for ep, n in enumerate(episode_lens):
        end = start + n - 1
        ranges.append((start, end))
        for t in range(start, end + 1):
            fields = calvin_frame(t, static_size=static_size, gripper_size=gripper_size, dtype=dtype, extras=extras, noise=noise)
            np.savez_compressed(split_dir / f"{prefix}{t:0{digits}d}.npz", **fields)
        for k in range(lang_per_episode):
            length = min(lang_len, n)
            s = start + (k * max(1, (n - length) // max(1, lang_per_episode - 1)) if lang_per_episode > 1 else 0)
            s = min(s, end - length + 1)
            ann, task = INSTRUCTIONS[(ep * lang_per_episode + k) % len(INSTRUCTIONS)]
            annotations.append((s, s + length - 1, ann, task))
        start = end + 1 + gap
    emb = np.stack([sentence_embedding(a[2]) for a in annotations]) if annotations else np.zeros((0, 384), np.float32)
    np.save(split_dir / "ep_start_end_ids.npy", np.asarray(ranges, dtype=np.int64))
    np.save(split_dir / "ep_lens.npy", np.asarray([e - s + 1 for s, e in ranges], dtype=np.int64))
    write_lang_annotations(split_dir, annotations, emb[:, None, :] if emb_shape == "n1d" else emb)
    stats = {"robot_obs": [{"_target_": "calvin_agent.utils.transforms.NormalizeVector", "mean": [0.0] * 15, "std": [1.0] * 15}]}
    (split_dir / "statistics.yaml").write_text(yaml.safe_dump(stats))
    if split == "training":
        np.save(split_dir / "scene_info.npy", np.array({"calvin_scene_D": [ranges[0][0], ranges[-1][1]]}, dtype=object), allow_pickle=True)
    return CalvinSplitInfo(split_dir, ranges, annotations, emb, prefix, digits, {"rgb_static": static_size, "rgb_gripper": gripper_size})


def write_lang_annotations(split_dir: Path, annotations: list[tuple[int, int, str, str]], emb: np.ndarray) -> None:
    """``lang_annotations/auto_lang_ann.npy`` as CALVIN pickles it."""
    data = {
        "info": {"indx": [(s, e) for s, e, _, _ in annotations], "episodes": []},
        "language": {"ann": [a for _, _, a, _ in annotations], "task": [t for _, _, _, t in annotations], "emb": emb},
    }
    np.save(Path(split_dir) / "lang_annotations" / "auto_lang_ann.npy", np.array(data, dtype=object), allow_pickle=True)


# ====================================================================== LIBERO / robomimic
def make_libero_file(
    path: str | Path,
    *,
    demo_lens: tuple[int, ...] = (12, 9),
    image_size: int = 128,
    instruction: str = "put the black bowl on the plate",
    robomimic: bool = False,
    dtype: Any = np.float64,
    seed: int = 0,
    noise: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Write one task file; returns, per demo, the arrays an import gives in our keys (images upright)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    expected = []
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        total = 0
        for i, T in enumerate(demo_lens):
            rng = np.random.default_rng(seed * 1000 + i)
            agent = np.stack([frame_image(seed * 997 + i * 101 + t, image_size, salt=3, noise=noise) for t in range(T)])
            wrist = np.stack([frame_image(seed * 997 + i * 101 + t, image_size, salt=4, noise=noise) for t in range(T)])
            eef_pos = rng.normal(size=(T, 3)).astype(dtype)
            quat = rng.normal(size=(T, 4))
            quat = (quat / np.linalg.norm(quat, axis=1, keepdims=True)).astype(dtype)
            gripper = rng.normal(size=(T, 2)).astype(dtype)
            joints = rng.normal(size=(T, 7)).astype(dtype)
            actions = np.clip(rng.normal(size=(T, 7)), -1, 1)
            actions[:, 6] = np.where(rng.random(T) > 0.5, 1.0, -1.0)
            demo = data.create_group(f"demo_{i}")
            obs = demo.create_group("obs")
            if robomimic:
                obj = rng.normal(size=(T, 10)).astype(dtype)
                obs["agentview_image"], obs["robot0_eye_in_hand_image"] = agent[:, ::-1], wrist[:, ::-1]
                obs["robot0_eef_pos"], obs["robot0_eef_quat"], obs["robot0_gripper_qpos"], obs["object"] = eef_pos, quat, gripper, obj
                nxt = demo.create_group("next_obs")
                nxt["robot0_eef_pos"] = np.concatenate([eef_pos[1:], eef_pos[-1:]])
            else:
                obs["agentview_rgb"], obs["eye_in_hand_rgb"] = agent[:, ::-1], wrist[:, ::-1]  # OpenGL: upside down
                obs["gripper_states"], obs["joint_states"], obs["ee_pos"] = gripper, joints, eef_pos
                obs["ee_ori"] = rng.normal(size=(T, 3)).astype(dtype)
                obs["ee_states"] = np.concatenate([eef_pos, obs["ee_ori"][()]], axis=1)
            demo["actions"] = actions
            demo["states"] = rng.normal(size=(T, 20))
            demo["robot_states"] = np.concatenate([gripper, eef_pos, quat], axis=1)
            rewards = np.zeros(T, np.uint8)
            rewards[-1] = 1
            demo["rewards"], demo["dones"] = rewards, rewards.copy()
            demo.attrs["num_samples"] = T
            demo.attrs["model_file"] = "<mujoco/>"
            demo.attrs["init_state"] = demo["states"][0]
            total += T
            exp = {
                "agentview_image": agent, "robot0_eye_in_hand_image": wrist,
                "robot0_eef_pos": eef_pos.astype(np.float32), "robot0_eef_quat": quat.astype(np.float32),
                "robot0_gripper_qpos": gripper.astype(np.float32), "action": actions.astype(np.float32),
            }
            if robomimic:
                exp["object"] = obj.astype(np.float32)
            else:
                exp["robot0_joint_pos"] = joints.astype(np.float32)
            expected.append(exp)
        data.attrs["total"] = total
        _write_file_attrs(f, path, len(demo_lens), instruction, robomimic)
    return expected


def _write_file_attrs(f: h5py.File, path: Path, demos: int, instruction: str, robomimic: bool) -> None:
    """The file-level fields: robomimic's env_args and train/valid masks, or LIBERO's problem and BDDL."""
    data = f["data"]
    if robomimic:
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20}})
        mask = f.create_group("mask")
        names = [f"demo_{i}".encode() for i in range(demos)]
        mask["train"] = np.array(names[:-1] or names, dtype="S")
        mask["valid"] = np.array(names[-1:], dtype="S")
    else:
        problem = {"problem_name": "libero_tabletop_manipulation", "domain_name": "robosuite", "language_instruction": instruction}
        data.attrs["env_name"] = "Libero_Tabletop_Manipulation"
        data.attrs["problem_info"] = json.dumps(problem)
        data.attrs["macros_image_convention"] = "opengl"
        data.attrs["bddl_file_name"] = f"bddl_files/{path.stem.removesuffix('_demo')}.bddl"
        data.attrs["bddl_file_content"] = "(define (problem synthetic))"
        data.attrs["env_args"] = json.dumps({"type": 1, "env_name": "Libero_Tabletop_Manipulation",
                                             "problem_name": "libero_tabletop_manipulation",
                                             "bddl_file": data.attrs["bddl_file_name"], "env_kwargs": {}})
        data.attrs["num_demos"] = demos


# ====================================================================== Diffusion Policy zarr (format 2)
def make_dp_zarr(path: str | Path, *, episode_lens: tuple[int, ...] = (10, 7, 12), image_size: int = 96) -> dict[str, np.ndarray]:
    """A Push-T-shaped zarr-format-2 replay buffer; returns its concatenated data arrays."""
    import numcodecs
    import zarr

    n = sum(episode_lens)
    rng = np.random.default_rng(7)
    arrays = {
        "img": np.stack([frame_image(t, image_size, salt=5) for t in range(n)]).astype(np.float32),
        "state": rng.uniform(0, 512, size=(n, 5)).astype(np.float32),
        "action": rng.uniform(0, 512, size=(n, 2)).astype(np.float32),
        "keypoint": rng.uniform(0, 512, size=(n, 9, 2)).astype(np.float32),
        "n_contacts": rng.integers(0, 3, size=(n, 1)).astype(np.float32),
    }
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    data = root.create_group("data")
    codec = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)
    for key, arr in arrays.items():
        chunks = (min(n, 8), *arr.shape[1:])
        data.create_array(key, shape=arr.shape, dtype=arr.dtype, chunks=chunks, compressors=codec)[:] = arr
    meta = root.create_group("meta")
    meta.create_array("episode_ends", shape=(len(episode_lens),), dtype=np.int64, chunks=(len(episode_lens),))[:] = np.cumsum(episode_lens)
    return arrays


# ====================================================================== our own store, simulator conventions
def make_sim_store(path: str | Path, *, episode_lens: tuple[int, ...] = (9, 6, 11), image_size: int = 32,
                   lang_emb: bool = True) -> None:
    """A store shaped like `dp collect` output (robosuite keys, gripper +1 closes), for export tests."""
    from dp.data.store import EpisodeStore

    tasks = [("lift", "lift the cube"), ("can", "pick up the can and place it in the bin")]
    store = EpisodeStore.create(path, control_freq=20.0, robot="panda", discrete_dims={"action": [6]},
                                roles={"lowdim": ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"],
                                       "image": ["agentview_image", "robot0_eye_in_hand_image"], "action": ["action"]})
    with store:
        for i, T in enumerate(episode_lens):
            rng = np.random.default_rng(100 + i)
            quat = rng.normal(size=(T, 4))
            action = np.clip(rng.normal(size=(T, 7)), -1, 1)
            action[:, 6] = np.where(np.arange(T) >= T // 2, 1.0, -1.0)
            data = {
                "agentview_image": np.stack([frame_image(t + 50 * i, image_size, salt=6) for t in range(T)]),
                "robot0_eye_in_hand_image": np.stack([frame_image(t + 50 * i, image_size, salt=7) for t in range(T)]),
                "robot0_eef_pos": rng.normal(size=(T, 3)),
                "robot0_eef_quat": quat / np.linalg.norm(quat, axis=1, keepdims=True),
                "robot0_gripper_qpos": np.stack([np.full(T, 0.04), np.full(T, -0.04)], axis=1),
                "object": rng.normal(size=(T, 10)),
                "action": action,
            }
            data = {k: v if v.dtype == np.uint8 else v.astype(np.float32) for k, v in data.items()}
            task, instruction = tasks[i % len(tasks)]
            meta: dict[str, Any] = {"task": task, "instruction": instruction, "success": i != 1, "seed": i, "source": "expert"}
            if lang_emb:
                meta["lang_emb"] = sentence_embedding(instruction)
            store.add_episode(data, meta)
