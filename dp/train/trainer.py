"""The training loop: AdamW + warmup then cosine, linear or constant learning rate, gradient clipping, EMA, bf16 autocast (a GPU with bf16, or a CPU with AMX), DDP,
validation on held-out episodes, metrics, atomic checkpoints and exact resume.

Exact resume: the data order is a function of (seed, epoch) (:class:`ResumableSampler`), and a
checkpoint stores the position inside the epoch, the raw and EMA weights, optimiser and scheduler
state and every rank's RNG state; a resumed run replays the same batches with the same noise. On the
CPU that gives bitwise-identical weights; GPU kernels are not deterministic by default, so a run
resumed on a GPU matches an uninterrupted one only to float rounding.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from dp.config import Config, check_task_intervals, dump_config, load_config
from dp.data.normalize import Normalizer
from dp.data.windows import passthrough_collate
from dp.errors import DpError
from dp.files import hold_lock, release_lock
from dp.models import checkpoint_files as ckpt_files
from dp.models.cost import measure_flops, param_counts
from dp.models.diffusion_policy import DiffusionPolicy
from dp.train import checkpoint as ckpt
from dp.train.data import TrainData, build_data, resolve, window_weights
from dp.train.distributed import init_distributed
from dp.train.lr_schedule import LR_SCHEDULES, follow_schedule, lr_scheduler
from dp.train.metrics import append_metrics, open_tensorboard, plot_loss, truncate_after
from dp.train.resumable_sampler import ResumableSampler

RUN_LOCK_FILE = ".dp-train.lock"  # held by the main training process for the whole run


def cpu_has_amx() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX tiles). There bf16 autocast
    trains about 1.5x faster than fp32 (bench/peers, Push-T preset); elsewhere bf16 is emulated and
    slower. torch has no public probe for it, so this asks its private one, and says no if it is gone."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def bf16_autocast_pays(device: torch.device) -> bool:
    """Whether bf16 autocast trains faster than fp32 on ``device``: a GPU with bf16 arithmetic (CUDA
    compute capability 8.0 and later, or ROCm) or a CPU with AMX; elsewhere (older GPUs, other CPUs,
    MPS) bf16 is emulated or unsupported, and training stays fp32."""
    if device.type == "cuda":
        return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8
    return device.type == "cpu" and cpu_has_amx()


def param_groups(policy: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's parameter groups: weight decay on the weight matrices, none on vectors (norms, biases),
    position tables and the task table."""
    decay, no_decay = [], []
    for name, p in policy.named_parameters():
        is_matrix = p.ndim >= 2 and not name.endswith(("_pos", "table.weight"))
        (decay if is_matrix else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class NonFiniteLoss(DpError):
    """Training produced a NaN/inf loss or gradient."""


def _describe_nonfinite(batch: dict[str, Any]) -> str:
    for name, value in [*((f"obs/{k}", v) for k, v in batch["obs"].items()), ("action", batch["action"]), ("lang_emb", batch.get("lang_emb"))]:
        if value is not None and value.is_floating_point() and not torch.isfinite(value).all():
            return f"batch key {name!r} holds NaN or inf"
    return "every input in the batch is finite, so training diverged (lower train.lr or train.grad_clip)"


class Trainer:
    """One process's share of a training run (rank 0 alone writes files)."""

    def __init__(self, cfg: Config, data_paths: list[str], run_dir: Path, resume: bool, progress: bool = True):
        self.dist, self.device = init_distributed(cfg.train.device)
        self.bf16 = bool(cfg.train.amp) and bf16_autocast_pays(self.device)
        self.precision = "bf16-autocast" if self.bf16 else "fp32"
        self.run_dir = Path(run_dir)
        self.progress = progress
        tcfg = cfg.train
        if tcfg.noise_draws < 1:
            raise DpError(f"train.noise_draws must be at least 1 (noise levels trained per encoded window), got {tcfg.noise_draws}")
        for name in ("steps", "log_every", "val_every", "ckpt_every"):
            if getattr(tcfg, name) < 1:
                raise DpError(f"train.{name} must be at least 1, got {getattr(tcfg, name)} (a value above train.steps means only at the end)")
        if tcfg.lr_schedule not in LR_SCHEDULES:
            raise DpError(f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {tcfg.lr_schedule!r}")
        if tcfg.batch_size % self.dist.world:
            raise DpError(f"train.batch_size={tcfg.batch_size} does not split over {self.dist.world} processes")
        threads = tcfg.threads or (max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", self.dist.world))) if self.device.type == "cpu" else 0)
        if threads:
            torch.set_num_threads(threads)

        resume_from = ckpt_files.latest_checkpoint(self.run_dir) if resume else None
        if not resume and ckpt_files.latest_checkpoint(self.run_dir) is not None:
            raise DpError(f"{self.run_dir}: already holds a training run; pass --resume to continue it, or choose another --out")
        if resume_from:
            ckpt_files.verify_checkpoint(resume_from, (ckpt_files.STATE_FILE, ckpt_files.NORMALIZER_FILE))
        state = ckpt.load_train_state(resume_from / ckpt_files.STATE_FILE) if resume_from else None
        normalizer = Normalizer.load(resume_from / ckpt_files.NORMALIZER_FILE) if resume_from else None

        self.cfg, stores = resolve(cfg, data_paths)
        self.data: TrainData = build_data(self.cfg, stores, normalizer)
        torch.manual_seed(tcfg.seed)  # identical initial weights on every rank
        self.policy = DiffusionPolicy(self.cfg).to(self.device)
        self.optimizer = torch.optim.AdamW(param_groups(self.policy, tcfg.weight_decay), lr=tcfg.lr, betas=tuple(tcfg.betas))
        from diffusers.training_utils import EMAModel

        self.scheduler = lr_scheduler(self.optimizer, tcfg)
        self.ema = EMAModel(self.policy.parameters(), decay=tcfg.ema_decay, use_ema_warmup=True, power=tcfg.ema_power, foreach=True)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        if state is not None:
            self._load_state(state, resume_from)
        else:
            torch.manual_seed(tcfg.seed + 1000 * self.dist.rank)  # different noise on each rank
        self.model = self.policy
        if self.dist.world > 1:
            find_unused = self.cfg.model.n_experts > self.cfg.model.top_k  # experts a batch did not route to
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.policy, device_ids=[self.device.index] if self.device.type == "cuda" else None, find_unused_parameters=find_unused
            )
        self.batch_size = tcfg.batch_size // self.dist.world
        weights = window_weights(self.cfg.data.task_weights, self.data.train)
        check_task_intervals(self.cfg.data.task_action_steps, list(self.cfg.vocab.tasks), self.cfg.data.action_horizon)  # fails now, not at eval
        self.sampler = ResumableSampler(self.data.train, self.dist.world, self.dist.rank, tcfg.seed, weights)
        workers = tcfg.num_workers if tcfg.num_workers >= 0 else (2 if self.cfg.data.image_keys else 0)
        self.drop_last = self.sampler.num_samples >= self.batch_size
        self.loader = DataLoader(  # its own generator: creating an iterator must not draw from the global RNG
            self.data.train, self.batch_size, sampler=self.sampler, num_workers=workers, collate_fn=passthrough_collate,
            drop_last=self.drop_last, pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(tcfg.seed),
        )
        self.train_map = self.data.train_task_map.to(self.device)
        self.ema_policy: DiffusionPolicy | None = None
        self.tensorboard = None
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.clean_partial(self.run_dir)
            ckpt.write_text_atomic(self.run_dir / ckpt_files.CONFIG_FILE, dump_config(self.cfg))
            self.metrics_path = self.run_dir / "metrics.jsonl"
            if resume:
                truncate_after(self.metrics_path, self.step)  # rows the killed run logged after its checkpoint
            else:
                self.metrics_path.unlink(missing_ok=True)
            self.tensorboard = open_tensorboard(self.run_dir, tcfg.tensorboard, purge_step=self.step + 1 if resume else 0)  # drops events logged after the checkpoint

    # ------------------------------------------------------------------ setup helpers
    def _load_state(self, state: dict[str, Any], source: Path) -> None:
        ckpt_files.load_checked_state(self.policy, state["model"], str(source / ckpt_files.STATE_FILE), self.cfg)
        self.ema.load_state_dict(state["ema"])
        self.ema.to(self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        rates = follow_schedule(self.scheduler, self.optimizer)
        saved_steps = load_config(source / ckpt_files.CONFIG_FILE).train.steps
        if saved_steps != self.cfg.train.steps and self.dist.main:
            warnings.warn(f"resuming at step {self.step} with train.steps={self.cfg.train.steps} (the run was configured for "
                          f"{saved_steps}): the {self.cfg.train.lr_schedule} learning-rate schedule now ends at step "
                          f"{self.cfg.train.steps}; the rate continues from its value there, {rates[0]:.3g}", stacklevel=3)
        rng = state["rng"]
        if len(rng) == self.dist.world:
            torch.set_rng_state(rng[self.dist.rank]["torch"])
            if self.device.type == "cuda" and "cuda" in rng[self.dist.rank]:
                torch.cuda.set_rng_state(rng[self.dist.rank]["cuda"], self.device)
        else:
            warnings.warn(f"resuming with {self.dist.world} processes, checkpoint has {len(rng)}: random streams restart", stacklevel=2)
            torch.manual_seed(self.cfg.train.seed + 1000 * self.dist.rank + self.step)
            if state.get("batch_size_per_rank") != self.cfg.train.batch_size // self.dist.world:
                self.batch_in_epoch = 0  # the position within the epoch no longer maps onto these shards
                self.epoch += 1

    def _to_device(self, batch: dict[str, Any], task_map: torch.Tensor) -> dict[str, Any]:
        nb = self.device.type == "cuda"
        out = {"obs": {k: v.to(self.device, non_blocking=nb) for k, v in batch["obs"].items()}, "action": batch["action"].to(self.device, non_blocking=nb)}
        out["task_id"] = task_map[batch["task_id"].to(self.device)]
        if "lang_emb" in batch:
            out["lang_emb"] = batch["lang_emb"].to(self.device, non_blocking=nb)
        return out

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def ema_weights(self) -> dict[str, torch.Tensor]:
        names = [n for n, _ in self.policy.named_parameters()]
        weights = {n: s.detach() for n, s in zip(names, self.ema.shadow_params)}
        for name, buf in self.policy.state_dict().items():
            weights.setdefault(name, buf)
        return weights

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """Forward, backward, clip, optimiser / scheduler / EMA step. Raises NonFiniteLoss before any update."""
        self.model.train()
        with self._autocast():
            loss, parts = self.model(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.train.grad_clip if self.cfg.train.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), clip)
        # grad_norm is identical on every rank after DDP's all-reduce: all ranks stop together
        if not torch.isfinite(grad_norm) or (self.dist.world == 1 and not torch.isfinite(loss)):
            raise NonFiniteLoss(
                f"training stopped at step {self.step + 1}: non-finite loss ({loss.item():.4g}) or gradient norm "
                f"({grad_norm.item():.4g}) on batch {self.batch_in_epoch} of epoch {self.epoch} (rank {self.dist.rank}); "
                f"{_describe_nonfinite(batch)}. Weights were not updated; the last good checkpoint is kept"
                + (f" ({ckpt_files.latest_checkpoint(self.run_dir)})" if ckpt_files.latest_checkpoint(self.run_dir) else " (none written yet)")
            )
        self.optimizer.step()
        self.scheduler.step()
        self.ema.step(self.policy.parameters())
        return {"loss": loss.detach(), "grad_norm": grad_norm.detach(), **parts}

    # ------------------------------------------------------------------ validation
    def _ema_model(self) -> DiffusionPolicy:
        if self.ema_policy is None:
            self.ema_policy = copy.deepcopy(self.policy)
        self.ema_policy.load_state_dict(self.ema_weights())
        return self.ema_policy.eval()

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """EMA weights on a fixed set of held-out windows: diffusion loss (fixed sigmas and noise) and
        the MSE of sampled chunks against the demonstrations (normalised action units)."""
        val = self.data.val
        if val is None or len(val) == 0:
            return None
        model = self._ema_model()
        n = min(len(val), self.cfg.train.val_batches * self.batch_size)
        idx = torch.linspace(0, len(val) - 1, n).round().long().tolist()
        val_map = self.data.val_task_map.to(self.device)
        losses, mses = [], []
        gen = torch.Generator().manual_seed(1234)
        for start in range(0, n, self.batch_size):
            batch = self._to_device(val.__getitems__(idx[start : start + self.batch_size]), val_map)
            with self._autocast():
                loss, parts = model.compute_loss(batch, generator=gen, draws=1)  # comparable across train.noise_draws
                noise = torch.randn(batch["action"].shape, generator=gen).to(self.device)
                pred = model.sample(batch["obs"], batch.get("task_id"), batch.get("lang_emb"), noise=noise)
            losses.append(parts["diffusion_loss"].item())
            mses.append((pred.float() - batch["action"]).pow(2).mean().item())
        return {"val_loss": sum(losses) / len(losses), "val_action_mse": sum(mses) / len(mses)}

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Path | None:
        """Checkpoint at the current step (collective: every rank contributes its RNG state)."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        rngs = [rng]
        if self.dist.world > 1:
            rngs = [None] * self.dist.world
            dist.all_gather_object(rngs, rng)
        if not self.dist.main:
            return None
        state = {
            "version": 1,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "batch_size_per_rank": self.batch_size,
            "model": self.policy.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rngs,
        }
        path = ckpt.save_checkpoint(
            self.run_dir, self.step, self.cfg, self.ema_weights(), self.data.normalizer, state, self.data.goals, self.cfg.train.keep_checkpoints
        )
        plot_loss(self.metrics_path, self.run_dir / "loss.png")
        return path

    def _weights_digest(self) -> list[str]:
        h = hashlib.sha256()
        for p in self.policy.parameters():
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        digests = [h.hexdigest()]
        if self.dist.world > 1:
            digests = [None] * self.dist.world
            dist.all_gather_object(digests, h.hexdigest())
        return digests

    def _all_mean(self, values: dict[str, float]) -> dict[str, float]:
        if self.dist.world == 1:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(values, (t / self.dist.world).tolist()))

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        tcfg = self.cfg.train
        if self.dist.main:
            sizes = {**param_counts(self.policy), **measure_flops(self.policy)}
            append_metrics(self.metrics_path, {"event": "start", "step": self.step, "world_size": self.dist.world, "device": str(self.device),
                                               "precision": self.precision, "bf16_autocast": self.bf16, "train_windows": len(self.data.train), "val_windows": len(self.data.val) if self.data.val else 0, **sizes},
                           self.tensorboard)
        bar = tqdm(total=tcfg.steps, initial=self.step, desc="train", dynamic_ncols=True, disable=not (self.dist.main and self.progress))
        sums: dict[str, float] = {}
        count, t_log, t0, cpu0 = 0, time.perf_counter(), time.perf_counter(), time.process_time()  # cpu_s: this process's CPU, all threads
        last: dict[str, Any] = {}
        while self.step < tcfg.steps:
            self.sampler.set_position(self.epoch, self.batch_in_epoch * self.batch_size)
            for raw in self.loader:
                out = self.train_step(self._to_device(raw, self.train_map))
                self.step += 1
                self.batch_in_epoch += 1
                count += 1
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                bar.update(1)
                if self.step % tcfg.log_every == 0 or self.step == tcfg.steps:
                    elapsed = time.perf_counter() - t_log
                    means = self._all_mean({k: v / count for k, v in sums.items()})
                    sps = count * self.batch_size * self.dist.world / max(elapsed, 1e-9)
                    last = {"event": "train", "step": self.step, "epoch": self.epoch, **means, "lr": self.scheduler.get_last_lr()[0],
                            "samples_per_s": sps, "elapsed_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0}
                    bar.set_postfix(loss=f"{means['loss']:.4f}", samples_s=f"{sps:.0f}", refresh=False)
                    if self.dist.main:
                        append_metrics(self.metrics_path, last, self.tensorboard)
                    sums, count, t_log = {}, 0, time.perf_counter()
                if self.dist.main and (self.step % tcfg.val_every == 0 or self.step == tcfg.steps):
                    result = self.validate()
                    if result is not None:
                        append_metrics(self.metrics_path, {"event": "val", "step": self.step, **result}, self.tensorboard)
                        last.update(result)
                if self.step % tcfg.ckpt_every == 0 or self.step == tcfg.steps:
                    self.save()
                if self.step >= tcfg.steps:
                    break
            else:
                self.epoch += 1
                self.batch_in_epoch = 0
                if len(self.sampler) == 0 and self.step == 0:
                    raise DpError("the training set yields no batches")
        bar.close()
        digests = self._weights_digest()
        summary = {"event": "end", "step": self.step, "run": str(self.run_dir), "wall_s": time.perf_counter() - t0,
                   "device": str(self.device), "precision": self.precision,
                   "weights_sha256": digests, **{k: v for k, v in last.items() if k not in ("event", "step")}}
        if self.dist.main:
            append_metrics(self.metrics_path, summary, self.tensorboard)
            plot_loss(self.metrics_path, self.run_dir / "loss.png")
            if self.tensorboard is not None:
                self.tensorboard.close()
        if len(set(digests)) > 1:
            raise DpError(f"the {self.dist.world} processes ended with different weights ({digests}); DDP lost synchronisation")
        return summary

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def train(cfg: Config, data_paths: list[str], run_dir: Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a run; returns the final summary row. One trainer per run folder: the main
    process holds RUN_LOCK_FILE in it, so a second trainer (two resumes of one run) is refused instead
    of interleaving checkpoints."""
    run_dir = Path(run_dir)
    lock = None
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun's rank; dist is not initialised yet
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = hold_lock(run_dir / RUN_LOCK_FILE, f"{run_dir}: another `dp train` is using this run folder "
                         f"({RUN_LOCK_FILE} is held); wait for it to finish or choose another --out")
    try:
        trainer = Trainer(cfg, data_paths, run_dir, resume, progress)
        try:
            return trainer.fit()
        finally:
            trainer.close()
    finally:
        release_lock(lock)
