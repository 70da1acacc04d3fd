"""Where training time goes: images/s of the whole step vs the model's fwd+bwd+update alone.

The ratio says whether the input path (indexing the uint8 array, conversion, batched
augmentation) keeps up with the model; ``dsm train --throughput`` prints it.
"""

from __future__ import annotations

import time

import torch

from dsm.config import TrainConfig


def profile(cfg: TrainConfig, steps: int = 20, warmup: int = 3) -> dict:
    """Time ``steps`` full training steps and ``steps`` model-only steps on one fixed batch."""
    from dsm.bench import device_name
    from dsm.runs import git_commit
    from dsm.train import Trainer

    trainer = Trainer(cfg, resume=False, show_progress=False)
    trainer.train_model.train()
    n, bs = len(trainer.x["train"]), cfg.batch_size
    gen = torch.Generator().manual_seed(cfg.seed)

    def full_step() -> None:
        idx = torch.randint(0, n, (bs,), generator=gen).to(trainer.device)
        trainer.train_step(*trainer.make_batch(idx), cfg.lr)

    fixed = trainer.make_batch(torch.arange(bs, device=trainer.device) % n)

    def model_step() -> None:
        trainer.train_step(*fixed, cfg.lr)

    def timed(fn) -> float:
        for _ in range(warmup):
            fn()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        return steps * bs / (time.perf_counter() - t0)

    model_ips = timed(model_step)
    full_ips = timed(full_step)
    return {
        "command": "dsm train --throughput",
        "git_commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dataset": trainer.data.manifest.get("dataset"),
        "manifest_hash": trainer.data.hash,
        "recipe": cfg.recipe,
        "model": cfg.model,
        "modulator": cfg.modulator,
        "input_size": cfg.input_size,
        "in_chans": trainer.in_chans,
        "batch_size": bs,
        "channels_last": trainer.channels_last,
        "compile": cfg.compile,
        "threads": torch.get_num_threads(),
        "allocator": trainer.allocator,
        "device": device_name(trainer.device),
        "steps": steps,
        "full_step_images_per_s": full_ips,
        "model_only_images_per_s": model_ips,
        "ratio": full_ips / model_ips,
    }
