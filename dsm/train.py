"""The training loop: one file, read in a sitting (nanoGPT's idiom).

``train(cfg)`` loads the prepared uint8 images once, builds the splits of the chosen
protocol, and for each epoch: reseeds every RNG from (seed, epoch), shuffles, converts
and augments whole batches on tensors, steps AdamW under a per-step cosine schedule,
evaluates on the validation split (never the test split), keeps the best checkpoint by
validation accuracy, stops early on validation loss, and writes ``last`` atomically.
Because each epoch is a pure function of (state at its start, seed, epoch), ``resume``
continues a killed run to the same result as an uninterrupted one.

Multi-GPU/CPU: ``torchrun --nproc_per_node N -m dsm.train ...`` runs DDP (NCCL on CUDA,
gloo on CPU); every rank evaluates, rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from tqdm import tqdm

from dsm.allocator import keep_freed_memory
from dsm.augment import BatchAugment
from dsm.bench import cpu_emulates_bf16
from dsm.checkpoint import init_weights, load_checkpoint, model_state, save_checkpoint
from dsm.config import TrainConfig
from dsm.data.format import WITHHELD, Prepared, load_prepared
from dsm.data.protocols import class_balanced_sampler_weights, make_splits
from dsm.metrics import classification_metrics
from dsm.preprocess import to_model_input
from dsm.registry import create_model
from dsm.runs import RunRecord, differs, load_run

CHECK_EVERY = 50  # training steps between reads of the running loss (a NaN check and the progress bar)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but CUDA is not available")
    return torch.device(name)


def model_spec(cfg: TrainConfig, num_classes: int, in_chans: int) -> dict[str, Any]:
    """What ``dsm.create_model`` needs to rebuild the network (stored in every checkpoint)."""
    kwargs = {"num_classes": num_classes, "in_chans": in_chans, "modulator": cfg.modulator, **cfg.model_opts}
    if cfg.modulator_opts:
        kwargs["modulator_opts"] = dict(cfg.modulator_opts)
    return {"name": cfg.model, "kwargs": kwargs}


def lr_at(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine from ``lr`` to ``min_lr``, per optimiser step."""
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(t, 1.0)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor, in_chans: int, size: int, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """Logits of uint8 images (N,H,W[,3]) in eval mode, batched."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = to_model_input(images[i : i + batch_size].to(device), in_chans, size)
        out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def evaluate_split(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    in_chans: int,
    size: int,
    device: torch.device,
    batch_size: int = 256,
) -> dict:
    logits = predict_logits(model, images, in_chans, size, device, batch_size)
    metrics = classification_metrics(labels.numpy(), logits.argmax(1).numpy(), classes)
    metrics["loss"] = float(F.cross_entropy(logits, labels)) if len(labels) else float("nan")
    return metrics


class Trainer:
    """Holds everything one run needs; ``fit()`` is the loop."""

    def __init__(self, cfg: TrainConfig, resume: bool = True, show_progress: bool = True) -> None:
        self.t_created = time.perf_counter()  # a time limit counts loading and building too
        self.cfg, self.resume, self.show_progress = cfg.check(), resume, show_progress
        self.rank, self.world = _dist_info()
        self.device = pick_device(cfg.device)
        # a CPU step frees and re-allocates the same buffers: keep them in the process (see dsm.allocator)
        self.allocator = keep_freed_memory() if self.device.type == "cpu" else None
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.device.type == "cpu" and cfg.amp_cpu and self.rank == 0 and cpu_emulates_bf16():
            warnings.warn(
                "amp_cpu: this CPU has neither AMX nor AVX512-BF16 (/proc/cpuinfo flags), so bf16 autocast is "
                "emulated and trains many times slower than fp32",
                stacklevel=2,
            )
        self.out = Path(cfg.out)
        self.data: Prepared = load_prepared(cfg.data)
        self.splits = make_splits(self.data, cfg.protocol, cfg.run_index, cfg.fold, cfg.val_fraction, cfg.seed)
        self._check_withheld()
        self.classes = self.data.classes
        self.in_chans = cfg.in_chans or self.data.channels
        self.size = cfg.input_size
        images = self.data.images  # memory-mapped; each split is read into RAM once
        labels = torch.from_numpy(np.asarray(self.data.labels, dtype=np.int64))
        self.x = {s: torch.from_numpy(np.ascontiguousarray(images[idx])) for s, idx in self._split_items()}
        self.y = {s: labels[torch.from_numpy(idx)] for s, idx in self._split_items()}
        if len(self.x["train"]) == 0 or len(self.x["val"]) == 0:
            raise ValueError(f"{cfg.data}: protocol {cfg.protocol!r} gave an empty train or validation split")
        self.x["train"] = self.x["train"].to(self.device)  # the hot loop indexes it on the device
        self.y["train"] = self.y["train"].to(self.device)

        seed_everything(cfg.seed)
        self.spec = model_spec(cfg, len(self.classes), self.in_chans)
        self.model = create_model(self.spec["name"], **self.spec["kwargs"]).to(self.device)
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else self.device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
        )
        # timm's EMA with warm-up: the decay grows with the step, so early epochs are not dominated by init weights
        self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay else None
        self.train_model: nn.Module = self.model
        if self.world > 1:
            self.train_model = nn.parallel.DistributedDataParallel(self.model)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model, mode=cfg.compile_mode)
        self.augment = BatchAugment(
            len(self.classes), cfg.hflip, cfg.crop_scale, cfg.rotation, cfg.random_erasing, cfg.mixup, cfg.cutmix
        )
        self.steps_per_epoch = len(self.x["train"]) // (cfg.batch_size * self.world)
        if cfg.limit_train_batches:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.limit_train_batches)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{cfg.data}: fewer training images than one batch of {cfg.batch_size * self.world}")
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.state: dict[str, Any] = {
            "epoch": 0,
            "step": 0,
            "best_val_acc": -1.0,
            "best_epoch": None,
            "best_val_loss": float("inf"),
            "bad_epochs": 0,
            "stopped_early": False,
        }
        self.record = RunRecord.start(cfg, self.data, self.splits, str(self.device), self.allocator)

    def _check_withheld(self) -> None:
        """A copy of the data whose pixels of some rows were not sent (``withheld.json``) may train only on
        rows it holds, and may not evaluate the test split: its run defers the test to the machine that has it."""
        withheld = self.data.withheld
        if not len(withheld):
            return
        where = self.data.root / WITHHELD
        if np.isin(np.concatenate([self.splits.train, self.splits.val]), withheld).any():
            raise ValueError(f"{where}: this copy lacks images that protocol {self.cfg.protocol!r} trains on")
        if not self.cfg.defer_test and np.isin(self.splits.test, withheld).any():
            raise ValueError(f"{where}: this copy lacks the test images; train with defer_test")

    def _split_items(self) -> list[tuple[str, np.ndarray]]:
        return [("train", self.splits.train), ("val", self.splits.val), ("test", self.splits.test)]

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    # --- checkpoints -------------------------------------------------------------------------------
    def _info(self, **extra: Any) -> dict[str, Any]:
        return {
            "model": self.spec,
            "classes": self.classes,
            "input": {"size": self.size, "channels": self.in_chans},
            "dataset": self.record.data["dataset"],
            "config": self.cfg.to_dict(),
            **({"init": self.record.init} if self.record.init else {}),  # the checkpoint names where it began
            **extra,
        }

    def save_last(self) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            tensors |= {f"ema.{k}": v for k, v in self.ema.state_dict().items()}
        opt = self.optimizer.state_dict()
        for pid, st in opt["state"].items():
            for name, t in st.items():
                tensors[f"optim.{pid}.{name}"] = t if torch.is_tensor(t) else torch.tensor(t)
        tensors["rng.torch"] = torch.get_rng_state()
        groups = [{k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]]
        info = self._info(state=self.state, optim_groups=groups, record=self.record.to_dict())
        save_checkpoint(self.out / "last", tensors, info)

    def load_last(self) -> bool:
        if not (self.out / "last.json").is_file():
            return False
        tensors, info = load_checkpoint(self.out / "last")
        lacks = [k for k in ("record", "config", "state", "optim_groups") if not isinstance(info.get(k), dict | list)]
        if lacks or "rng.torch" not in tensors:
            what = f"no {lacks[0]!r}" if lacks else "no RNG state"
            raise ValueError(f"{self.out / 'last.json'}: not a training checkpoint ({what}); use a new --out")
        if why := differs(self.cfg, {**info["record"], "config": info["config"]}, self.data.hashes):
            problem = {
                "config": "written by a different config",
                "architecture": "its network's code defaults changed since",
                "data": f"trained on other data than {self.cfg.data}",
                "init": f"started from another checkpoint than {self.cfg.init_from} holds now",
            }[why]
            raise ValueError(f"{self.out / 'last.json'}: {problem}; use a new --out")
        self.model.load_state_dict(model_state(tensors))
        if self.ema is not None:
            self.ema.load_state_dict(model_state(tensors, "ema."))
        opt = self.optimizer.state_dict()
        for pid in range(sum(len(g["params"]) for g in opt["param_groups"])):
            st = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"optim.{pid}.")}
            if st:
                opt["state"][pid] = st
        for g, saved in zip(opt["param_groups"], info["optim_groups"], strict=True):
            g.update(saved)
        self.optimizer.load_state_dict(opt)
        torch.set_rng_state(tensors["rng.torch"])
        self.state = info["state"]
        # the step counter in this run's steps: a resume on another number of processes has other steps per
        # epoch, and the learning-rate schedule and the EMA warm-up read the step (same count on the same world)
        self.state["step"] = self.state["epoch"] * self.steps_per_epoch
        self.record = RunRecord.from_dict({**info["record"], "config": self.cfg.to_dict()})
        self.record.resumed(self.state["epoch"], self.device, self.allocator)
        if self.state["best_epoch"] == self.state["epoch"] and self.rank == 0 and not self._best_is_current():
            self.save_best()  # the run stopped between writing last and best: last holds the best weights
        return True

    def _best_is_current(self) -> bool:
        path = self.out / "best.json"
        return path.is_file() and json.loads(path.read_text()).get("epoch") == self.state["epoch"]

    def save_best(self) -> None:
        tensors = {f"model.{k}": v for k, v in self.eval_model.state_dict().items()}
        save_checkpoint(self.out / "best", tensors, self._info(epoch=self.state["epoch"]))

    # --- the loop ------------------------------------------------------------------------------------
    def make_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 training images at ``idx`` -> augmented float batch and targets."""
        xb = to_model_input(self.x["train"][idx], self.in_chans, self.size)
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return self.augment(xb, self.y["train"][idx])

    def train_step(self, xb: torch.Tensor, target: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One AdamW step at learning rate ``lr``; returns (logits, loss)."""
        cfg = self.cfg
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        amp = cfg.amp if self.device.type == "cuda" else cfg.amp_cpu
        with torch.autocast(self.device.type, dtype=torch.bfloat16) if amp else nullcontext():
            logits = self.train_model(xb)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, step=self.state["step"])
        self.state["step"] += 1
        return logits.detach(), loss.detach()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, x, y = self.cfg, self.x["train"], self.y["train"]
        seed_everything(cfg.seed * 1_000_003 + epoch * 7919 + self.rank)  # augmentation + dropout
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        if cfg.balanced_sampling:  # every class equally likely, with replacement (AffectNet's imbalance)
            weights = torch.from_numpy(class_balanced_sampler_weights(self.y["train"].cpu().numpy()))
            perm = torch.multinomial(weights, len(x), replacement=True, generator=gen)
        else:
            perm = torch.randperm(len(x), generator=gen)
        perm = perm[self.rank :: self.world].to(self.device)  # same permutation on every rank, sharded
        self.train_model.train()
        # running sums stay on the device: reading them every step would stall a GPU behind the Python loop
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen, t0, cpu0 = 0, time.perf_counter(), os.times()
        bar = tqdm(
            range(self.steps_per_epoch),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=not self.show_progress or self.rank != 0,
        )
        for i in bar:
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            xb, target = self.make_batch(idx)
            lr = lr_at(cfg, self.state["step"], self.total_steps, self.steps_per_epoch)
            logits, loss = self.train_step(xb, target, lr)
            loss_sum += loss * len(idx)
            # under MixUp/CutMix: against the label with the larger share of each mixed image
            correct += (logits.argmax(1) == (target.argmax(1) if target.ndim == 2 else y[idx])).sum()
            seen += len(idx)
            if (i + 1) % CHECK_EVERY == 0 or i + 1 == self.steps_per_epoch:
                # before any checkpoint: last.* keeps the last good epoch
                if not math.isfinite(mean := float(loss_sum) / seen):
                    raise FloatingPointError(
                        f"{self.out}: training loss is {mean} at epoch {epoch + 1}, by step {i + 1}; the run "
                        "stopped (lower the learning rate, or check the data)"
                    )
                bar.set_postfix(loss=f"{mean:.3f}", lr=f"{lr:.2e}")
        if self.world > 1:  # every rank's share of the epoch, not rank 0's alone
            sums = torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(seen), device=self.device)])
            dist.all_reduce(sums)
            loss_sum, correct, seen = sums[0], sums[1], int(sums[2])
            self._broadcast_buffers()
        loss_sum, correct = float(loss_sum), int(correct)
        dt, cpu = time.perf_counter() - t0, os.times()
        return {
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "lr": lr,
            # the EMA's decay at the epoch's last step: timm's warm-up grows it towards ema_decay, a cap reached
            # only after about (1 - ema_decay) ** -1.5 steps (0.999: 31,600), longer than most CPU schedules
            **({"ema_decay": self.ema.get_decay(self.state["step"] - 1)} if self.ema is not None else {}),
            "time_s": dt,  # wall time: a pause of the process counts
            # this process's CPU time in the loop, all threads: a pause does not count, and kernel time shows
            "cpu_user_s": cpu.user - cpu0.user,
            "cpu_system_s": cpu.system - cpu0.system,
            "images_per_s": seen * self.world / dt,
        }

    def validate(self) -> dict:
        return evaluate_split(
            self.eval_model,
            self.x["val"],
            self.y["val"],
            self.classes,
            self.in_chans,
            self.size,
            self.device,
            self.cfg.eval_batch_size,
        )

    def fit(self) -> dict:
        """Train to the end of the schedule (or an early stop), then ``finish``. With ``time_limit`` or
        ``defer_test`` it may return first, the run resumable and its record still "running"."""
        cfg = self.cfg
        if self.resume and self.load_last():
            if self.rank == 0:
                print(f"resumed {self.out} at epoch {self.state['epoch']}", flush=True)
        else:
            if self.resume and self.rank == 0:
                self._warn_lost_checkpoint()
            if cfg.init_from:
                self._init_weights()
        self.record.world_size = max(self.record.world_size, self.world)  # the most processes it ever trained on
        finished = self._finished_record()
        if self.rank == 0 and finished is None:  # a finished record keeps its final metrics
            self.out.mkdir(parents=True, exist_ok=True)
            self.record.write(self.out)
        while self.state["epoch"] < cfg.epochs and not self.state["stopped_early"]:
            t_epoch = time.perf_counter()
            epoch = self.state["epoch"]
            row = {"epoch": epoch + 1, **self.train_epoch(epoch)}
            val = self.validate()
            if not math.isfinite(val["loss"]):
                raise FloatingPointError(f"{self.out}: validation loss is {val['loss']} after epoch {epoch + 1}")
            row |= {"val_loss": val["loss"], "val_acc": val["accuracy"], "val_balanced_acc": val["balanced_accuracy"]}
            self.state["epoch"] = epoch + 1
            improved = val["accuracy"] > self.state["best_val_acc"]
            if improved:
                self.state["best_val_acc"], self.state["best_epoch"] = val["accuracy"], epoch + 1
            if val["loss"] < self.state["best_val_loss"]:
                self.state["best_val_loss"], self.state["bad_epochs"] = val["loss"], 0
            else:
                self.state["bad_epochs"] += 1
            if cfg.early_stop_patience is not None and self.state["bad_epochs"] >= cfg.early_stop_patience:
                self.state["stopped_early"] = True
            self.record.add_epoch(row)
            if self.rank == 0:  # last before best: a crash in between is repaired by load_last
                self.save_last()
                if improved:
                    self.save_best()
                self.record.write(self.out)
                print(
                    f"epoch {epoch + 1}/{cfg.epochs} loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | "
                    f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} | lr {row['lr']:.2e} | "
                    f"{row['images_per_s']:.0f} img/s" + (" | early stop" if self.state["stopped_early"] else ""),
                    flush=True,
                )
            if cfg.time_limit is not None and self._out_of_time(t_epoch):
                break
        done = self.state["epoch"] >= cfg.epochs or self.state["stopped_early"]
        if done and finished is not None:
            return finished  # nothing was left to train, and its test split was evaluated once, before
        if not done or cfg.defer_test:
            if self.rank == 0:
                why = "its final evaluation is deferred" if done else f"time limit of {cfg.time_limit:g} s"
                print(
                    f"{self.out}: stopped after epoch {self.state['epoch']} of {cfg.epochs} ({why}); "
                    "the same command with --resume continues it",
                    flush=True,
                )
            return self.record.to_dict()
        return self.finish()

    def _init_weights(self) -> None:
        """Start from ``init_from``'s weights (model and EMA); a resume reads ``last`` instead, so a run that
        has begun no longer needs the file."""
        self.record.init = init_weights(self.model, self.cfg.init_from)
        if self.ema is not None:
            self.ema.module.load_state_dict(self.model.state_dict())

    def _warn_lost_checkpoint(self) -> None:
        """Say so when a resume finds a run record with epochs but no ``last`` checkpoint to continue from
        (checkpoints are not committed, so a fresh clone has only the record): the run starts over."""
        try:
            run = load_run(self.out)
        except (FileNotFoundError, ValueError):
            return
        if (n := len(run.get("epochs") or [])) and run.get("status") != "finished":
            warnings.warn(
                f"{self.out / 'run.json'}: records {n} epoch{'s' * (n > 1)} but there is no last checkpoint "
                "to continue from; training starts over at epoch 1 and replaces that record",
                stacklevel=3,
            )

    def _finished_record(self) -> dict | None:
        """The finished record of this run when nothing is left to train (a resume of a finished run)."""
        if self.state["epoch"] < self.cfg.epochs and not self.state["stopped_early"]:
            return None
        try:
            run = load_run(self.out)
        except (FileNotFoundError, ValueError):
            return None
        return run if run.get("status") == "finished" else None

    def _out_of_time(self, t_epoch: float) -> bool:
        """Whether the next epoch, as long as the last one (begun at ``t_epoch``), would end past ``time_limit``
        counted from the Trainer's start (on any rank)."""
        now = time.perf_counter()
        late = torch.tensor(float(now - self.t_created + (now - t_epoch) > self.cfg.time_limit), device=self.device)
        if self.world > 1:  # ranks must stop after the same epoch
            dist.all_reduce(late, op=dist.ReduceOp.MAX)
        return bool(late)

    @torch.no_grad()
    def _broadcast_buffers(self) -> None:
        """Rank 0's BatchNorm statistics (model and EMA) on every rank. DDP syncs them at the start of each
        forward, so after an epoch's last step every rank holds its own: without this, the ranks validate
        slightly different models and may disagree on early stopping (and then wait on each other forever)."""
        for module in (self.model, *([self.ema.module] if self.ema is not None else [])):
            for b in module.buffers():
                dist.broadcast(b, 0)

    @torch.no_grad()
    def _rank_divergence(self) -> float:
        """Largest difference of any parameter or floating buffer between ranks (0.0 when they are in sync)."""
        tensors = [*self.model.parameters(), *(b for b in self.model.buffers() if b.is_floating_point())]
        flat = torch.cat([t.detach().float().flatten() for t in tensors])
        hi, lo = flat.clone(), flat.clone()
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        return float((hi - lo).abs().max())

    def finish(self) -> dict:
        """Evaluate the best checkpoint on validation and test, complete the run record."""
        if self.world > 1:
            self.record.ddp_param_max_abs_diff = self._rank_divergence()
            dist.barrier()  # rank 0 wrote the best checkpoint
        tensors, info = load_checkpoint(self.out / "best")
        best = create_model(self.spec["name"], **self.spec["kwargs"]).to(self.device)
        best.load_state_dict(model_state(tensors))
        args = (self.classes, self.in_chans, self.size, self.device, self.cfg.eval_batch_size)
        val = evaluate_split(best, self.x["val"], self.y["val"], *args)
        test = evaluate_split(best, self.x["test"], self.y["test"], *args) if len(self.x["test"]) else None
        self.record.finish(self.state, val, test)
        if self.rank == 0:  # the checkpoint first: a "finished" record always has its metrics in best.json
            save_checkpoint(self.out / "best", tensors, {**info, "val_metrics": val, "test_metrics": test})
            self.record.write(self.out)
        return self.record.to_dict()


def train(cfg: TrainConfig, resume: bool = True, show_progress: bool = True) -> dict:
    """Train one run; returns its run record (also written to ``cfg.out/run.json``)."""
    return Trainer(cfg, resume=resume, show_progress=show_progress).fit()


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``torchrun -m dsm.train`` (the same flags as ``dsm train``)."""
    import argparse

    from dsm import train_cli

    parser = argparse.ArgumentParser(prog="dsm.train")
    train_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        backend = "nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    try:
        return train_cli.run(args)
    finally:
        if distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
