"""Lightning plumbing shared by every training command (classifier, interpreter).

- devices: ``trainer.device`` goes through the one resolver, :func:`l2i.device.resolve_device`
  (and :func:`l2i.device.lightning_devices` for the Trainer).
- :func:`build_trainer` makes a ``lightning.Trainer`` from a :class:`~l2i.config.TrainerConfig`:
  best checkpoint on a monitored metric + ``last.ckpt`` (for ``--trainer.resume``) in
  ``output_folder/checkpoints``, CSV logs in ``output_folder/logs`` (TensorBoard too when asked),
  progress bar, gradient clipping, precision, DDP when ``trainer.devices > 1`` or under
  ``torchrun --nnodes N --nproc_per_node M`` (:func:`torchrun_layout`; gloo on CPU, NCCL on GPU),
  determinism and the seed. Only global rank 0 writes checkpoints and logs (Lightning).
  Early stopping on the same metric when ``trainer.patience > 0``.
- :func:`resume_checkpoint` decides whether a run continues from ``last.ckpt``, starts afresh,
  or must be refused (a finished run is never overwritten silently; a resume whose config
  differs from the interrupted run's, :mod:`l2i.rerun`, is refused unless
  ``--trainer.restart true`` discards the old run).
- :func:`fit` runs ``trainer.fit`` and turns Ctrl-C into :class:`TrainingInterrupted` (a
  ``KeyboardInterrupt`` whose message is a one-line resume hint; the CLI exits 130 with it).
- :func:`configure_optimizers` builds the optimiser and LR schedule (cosine with linear warmup,
  stepped per batch; ReduceLROnPlateau on the monitored metric; or none) in Lightning's format.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from l2i.config import TrainerConfig
from l2i.device import lightning_devices, resolve_device
from l2i.errors import ConfigError, L2IError

CHECKPOINT_DIR = "checkpoints"
LAST_CKPT = "last.ckpt"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# --------------------------------------------------------------------------- trainer
def build_trainer(trainer_cfg: TrainerConfig, output_folder: str | os.PathLike, monitor: str,
                  mode: str, extra_callbacks: Sequence[Any] = (),
                  distributed_sampler: bool = True) -> Any:
    """A ``lightning.Trainer`` writing into ``output_folder``.

    ``monitor``/``mode`` (``"max"`` or ``"min"``) choose the best checkpoint, saved as
    ``checkpoints/best-epochNNN.ckpt`` next to ``checkpoints/last.ckpt`` (every epoch, for
    resuming). Seeds everything with ``trainer.seed`` first. ``distributed_sampler``: let
    Lightning put a DistributedSampler into the loaders under DDP (False for the
    :func:`clip_loader` loaders, which split by rank themselves).
    """
    import lightning as L

    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    out = Path(output_folder)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(trainer_cfg.seed, workers=True, verbose=False)

    accelerator, devices, num_nodes, strategy = _placement(trainer_cfg)
    callbacks = [*_checkpoint_callbacks(out, monitor, mode), *extra_callbacks,
                 *_stop_and_progress(trainer_cfg, monitor, mode)]
    loggers = _loggers(trainer_cfg, out)

    limit = _limit(trainer_cfg.limit_batches)
    return L.Trainer(
        accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
        precision=trainer_cfg.precision, max_epochs=trainer_cfg.epochs,
        gradient_clip_val=trainer_cfg.grad_clip if trainer_cfg.grad_clip > 0 else None,
        deterministic="warn" if trainer_cfg.deterministic else False,
        callbacks=callbacks, logger=loggers, default_root_dir=str(out),
        enable_progress_bar=trainer_cfg.progress, enable_model_summary=trainer_cfg.progress,
        limit_train_batches=limit, limit_val_batches=limit,
        num_sanity_val_steps=0, log_every_n_steps=10, use_distributed_sampler=distributed_sampler,
    )


def _placement(trainer_cfg: TrainerConfig) -> tuple[str, Any, int, Any]:
    """``(accelerator, devices, num_nodes, strategy)`` for the Trainer: ``trainer.device`` and
    ``trainer.devices``, torchrun's layout when started by it, DDP (gloo on CPU, NCCL on GPU)
    when more than one process runs."""
    accelerator, devices = lightning_devices(resolve_device(trainer_cfg.device))
    if trainer_cfg.devices < 1:
        raise ConfigError(f"trainer.devices must be >= 1, got {trainer_cfg.devices}")
    if trainer_cfg.devices > 1:
        if isinstance(devices, list):
            raise ConfigError("trainer.devices > 1 cannot be combined with a single "
                              f"trainer.device {trainer_cfg.device!r}; use cuda or auto")
        devices = trainer_cfg.devices
    num_nodes, local_world = torchrun_layout()
    if local_world:  # started by torchrun: its layout wins (one process per device)
        devices = local_world if isinstance(devices, int) else devices
    n_proc = num_nodes * (len(devices) if isinstance(devices, list) else devices)
    strategy: Any = trainer_cfg.strategy
    if strategy == "auto" and n_proc > 1:
        from lightning.pytorch.strategies import DDPStrategy
        strategy = DDPStrategy(process_group_backend="gloo" if accelerator == "cpu" else "nccl")
    return accelerator, devices, num_nodes, strategy


def _checkpoint_callbacks(out: Path, monitor: str, mode: str) -> list[Any]:
    """The best checkpoint (``best-epochNNN.ckpt``, by ``monitor``) and ``last.ckpt``."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    ckpt_dir = out / CHECKPOINT_DIR
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best-epoch{epoch:03d}",
                           auto_insert_metric_name=False, monitor=monitor, mode=mode,
                           save_top_k=1)
    # last.ckpt every epoch (Lightning's save_last only writes it when `best` improved); after
    # `best` in the list, so it holds best's updated state (Lightning keeps their order)
    last = ModelCheckpoint(dirpath=ckpt_dir, filename=Path(LAST_CKPT).stem, monitor=None,
                           save_top_k=1, enable_version_counter=False)
    return [best, last]


def _stop_and_progress(trainer_cfg: TrainerConfig, monitor: str, mode: str) -> list[Any]:
    """Early stopping (``trainer.patience`` > 0) and the progress bar (``trainer.progress``)."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    callbacks: list[Any] = []
    if trainer_cfg.patience < 0:
        raise ConfigError(f"trainer.patience must be >= 0 (0 = no early stopping), got "
                          f"{trainer_cfg.patience}")
    if trainer_cfg.patience > 0:
        callbacks.append(_early_stopping(monitor, mode, trainer_cfg.patience,
                                         trainer_cfg.min_delta))
    if trainer_cfg.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    return callbacks


def _loggers(trainer_cfg: TrainerConfig, out: Path) -> list[Any]:
    """CSV logs under ``out/logs``; TensorBoard too with ``trainer.tensorboard``."""
    from lightning.pytorch.loggers import CSVLogger

    loggers: list[Any] = [CSVLogger(save_dir=str(out), name="logs", flush_logs_every_n_steps=10)]
    if trainer_cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401
            from lightning.pytorch.loggers import TensorBoardLogger
        except ImportError:
            raise ConfigError("trainer.tensorboard is true but the 'tensorboard' package is not "
                              "installed: pip install tensorboard, or set "
                              "--trainer.tensorboard false") from None
        loggers.append(TensorBoardLogger(save_dir=str(out), name="tensorboard"))
    return loggers


def torchrun_layout() -> tuple[int, int]:
    """``(nodes, processes per node)`` of a ``torchrun --nnodes N --nproc_per_node M`` launch
    (from its ``WORLD_SIZE`` / ``LOCAL_WORLD_SIZE``), ``(1, 0)`` when not started by torchrun."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "0"))
    if local < 1:
        return 1, 0
    world = int(os.environ.get("WORLD_SIZE", str(local)))
    return max(1, world // local), local


def world_size(trainer_cfg: TrainerConfig) -> int:
    """Number of training processes: torchrun's ``WORLD_SIZE``, else ``trainer.devices``."""
    nodes, local = torchrun_layout()
    return nodes * local if local else max(1, trainer_cfg.devices)


def _early_stopping(monitor: str, mode: str, patience: int, min_delta: float) -> Any:
    """Lightning's EarlyStopping (an epoch is better when the metric gains more than
    ``min_delta``), except that a resumed run keeps the patience it is given (Lightning
    restores the interrupted run's)."""
    from lightning.pytorch.callbacks import EarlyStopping

    class _EarlyStopping(EarlyStopping):
        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            super().load_state_dict({**state_dict, "patience": self.patience})

    if min_delta < 0:
        raise ConfigError(f"trainer.min_delta must be >= 0, got {min_delta}")
    return _EarlyStopping(monitor=monitor, mode=mode, patience=patience, min_delta=min_delta)


def _limit(value: float | None) -> int | float | None:
    """``trainer.limit_batches``: None = all, <= 1 a fraction, > 1 a number of batches."""
    if value is None:
        return None
    if value <= 0:
        raise ConfigError(f"trainer.limit_batches must be > 0 (or null), got {value}")
    return int(value) if value > 1 else float(value)


def best_checkpoint_path(trainer: Any) -> str | None:
    """Path of the best checkpoint kept by :func:`build_trainer`'s ModelCheckpoint, if any.

    After a resume the callback's state is restored from ``last.ckpt``, so this still points at
    the best epoch of the whole run.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.monitor is not None and cb.best_model_path:
            return cb.best_model_path
    return None


class EpochShuffleSampler(torch.utils.data.RandomSampler):
    """A training sampler whose order depends only on ``(seed, epoch)``: epoch ``e`` visits
    ``torch.randperm(n)`` drawn from a generator seeded ``seed + e``, exactly the permutation
    Lightning's DistributedSampler (``seed = PL_GLOBAL_SEED``) deals out to the DDP ranks.

    So one process with batch ``B x R`` sees the same global batches as ``R`` DDP processes with
    batch ``B``, and a resumed run the same order as an uninterrupted one. Lightning calls
    :meth:`set_epoch` every epoch; under DDP it replaces this sampler (a RandomSampler) by its
    DistributedSampler with ``shuffle=True``.
    """

    def __init__(self, data_source: Any, seed: int | None = None) -> None:
        super().__init__(data_source)
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", "0")) if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Any:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(len(self.data_source), generator=gen).tolist())


def clip_loader(ds: Any, batch_size: int, shuffle: bool, seed: int, workers: int = 0,
                buffer: int = 0, collate: Any = None, drop_single: bool = False,
                rank: int | None = None, world_size: int | None = None) -> Any:
    """A DataLoader over ``ds`` (a map-style dataset of clips) in batches of
    :class:`l2i.shards.ClipBatchSampler`: the order depends only on ``(seed, epoch)``, is the
    same for any ``workers``, and is split between DDP ranks (train with
    ``build_trainer(..., distributed_sampler=False)``).

    ``buffer``: 0 shuffles globally (the permutation of :class:`EpochShuffleSampler`); > 0
    shards first, then a shuffle buffer of that many clips (``data.shuffle_buffer``), for
    datasets whose clips sit in shards (``ds.wavs`` a :class:`l2i.shards.ShardedArray`: reads
    stay within a few shards at a time). A dataset with ``__getitems__`` reads each batch in
    one call (its ``collate`` then has nothing left to do).
    """
    from torch.utils.data import DataLoader

    from l2i.shards import ClipBatchSampler, ShardedArray

    wavs = getattr(ds, "wavs", getattr(getattr(ds, "arrays", None), "wavs", None))
    groups = wavs.file_index if isinstance(wavs, ShardedArray) else None
    sampler = ClipBatchSampler(len(ds), batch_size, shuffle=shuffle, seed=seed, buffer=buffer,
                               groups=groups, rank=rank, world_size=world_size,
                               drop_single=drop_single)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate or _batch_as_is,
                      num_workers=workers, persistent_workers=workers > 0)


def _batch_as_is(batch: Any) -> Any:
    """The datasets build whole batches in ``__getitems__``: nothing left to collate."""
    return batch


def early_stop_info(trainer: Any) -> dict[str, Any]:
    """``{"stopped_early": bool, "patience": int | None}`` of a finished ``trainer.fit``."""
    from lightning.pytorch.callbacks import EarlyStopping

    for cb in trainer.callbacks:
        if isinstance(cb, EarlyStopping):
            return {"stopped_early": bool(cb.stopped_epoch), "patience": int(cb.patience)}
    return {"stopped_early": False, "patience": None}


# --------------------------------------------------------------------------- Ctrl-C
class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``str(err)`` is a one-line hint on how to resume."""


def resume_hint(output_folder: str | os.PathLike) -> str:
    """What to do after an interrupted training in ``output_folder`` (one line)."""
    last = Path(output_folder) / CHECKPOINT_DIR / LAST_CKPT
    if last.is_file():
        return (f"training stopped; run the same command with --trainer.resume true to continue "
                f"from the last finished epoch ({last})")
    return "training stopped before its first epoch ended; run the same command again"


def fit(trainer: Any, module: Any, train_loader: Any, valid_loader: Any,
        ckpt_path: str | None, output_folder: str | os.PathLike) -> None:
    """``trainer.fit``; Ctrl-C raises :class:`TrainingInterrupted` with :func:`resume_hint`.

    Lightning catches the KeyboardInterrupt itself, tears down and calls ``sys.exit(1)``; the
    SystemExit of an interrupted trainer becomes the hint. The SIGINT handler Lightning swaps
    out while shutting down is put back.
    """
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        trainer.fit(module, train_loader, valid_loader, ckpt_path=ckpt_path)
    except SystemExit:
        if getattr(trainer, "interrupted", False):
            raise TrainingInterrupted(resume_hint(output_folder)) from None
        raise
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGINT, handler)


# --------------------------------------------------------------------------- resuming
def resume_checkpoint(output_folder: str | os.PathLike, trainer_cfg: TrainerConfig,
                      final: str | None = None, config: Any = None) -> str | None:
    """The checkpoint to resume from, or None for a fresh run.

    With ``trainer.resume``: ``output_folder/checkpoints/last.ckpt`` (L2IError if absent), and,
    when ``config`` (the command's recipe) is given, refuse if it differs from the interrupted
    run's ``config.yaml`` in a key that changes results (:mod:`l2i.rerun`; ``trainer.epochs``
    and ``trainer.patience`` may change). Without it, refuse to start over a finished run
    (``output_folder/<final>`` exists) or an interrupted one (``last.ckpt`` exists): the user
    resumes or picks a fresh folder. ``trainer.restart`` discards an earlier run
    (:func:`discard_run`) and starts afresh.
    """
    out = Path(output_folder)
    last = out / CHECKPOINT_DIR / LAST_CKPT
    if trainer_cfg.restart:
        discard_run(out, final)
        return None
    if trainer_cfg.resume:
        if not last.is_file():
            raise L2IError(f"--trainer.resume: no checkpoint to resume from ({last} does not "
                           "exist); run without --trainer.resume to start training")
        if config is not None:
            _check_same_config(out, config)
        return str(last)
    if final is not None and (out / final).exists():
        raise L2IError(f"{out} already holds a finished run ({out / final}); pass "
                       "--trainer.resume true to continue it, or choose a fresh --output_folder")
    if last.is_file():
        raise L2IError(f"{out} holds an interrupted run ({last}); pass --trainer.resume true "
                       "to continue it, or choose a fresh --output_folder")
    return None


def _check_same_config(out: Path, config: Any) -> None:
    """L2IError when ``config`` differs from ``out/config.yaml`` in a hashed key."""
    import yaml

    from l2i.rerun import RESUME_MAY_CHANGE, config_diff, hashed_view

    saved = out / "config.yaml"
    if not saved.is_file():
        return
    try:
        old = yaml.safe_load(saved.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return
    diffs = config_diff(hashed_view(old), hashed_view(config), ignore=RESUME_MAY_CHANGE,
                        shared_only=True)  # a key added by an l2i update is no change
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise L2IError(f"--trainer.resume: the config differs from the interrupted run's "
                       f"({saved}): {shown}. Resume with the same options, or pass "
                       "--trainer.restart true to discard that run and start afresh")


def discard_run(out: Path, final: str | None) -> None:
    """Remove an earlier run's checkpoints, final artefact and metrics (``--trainer.restart``);
    caches (``out/cache``) and logs stay."""
    import shutil

    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    for name in (final, "metrics.json"):
        if name and (out / name).is_file():
            (out / name).unlink()


# --------------------------------------------------------------------------- optimisation
def configure_optimizers(params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
                         trainer_cfg: TrainerConfig, steps_per_epoch: int,
                         monitor: str = "valid_loss", mode: str = "min") -> dict[str, Any]:
    """Optimiser + LR schedule in the format ``LightningModule.configure_optimizers`` returns.

    ``trainer.optimizer``: ``adam`` | ``adamw`` | ``sgd`` (momentum 0.9, Nesterov), with
    ``trainer.lr`` and ``trainer.weight_decay``. ``trainer.scheduler``:

    - ``cosine``: linear warmup over ``warmup_epochs * steps_per_epoch`` steps, then a cosine from
      ``lr`` down to 0 at ``epochs * steps_per_epoch`` steps; stepped every batch.
    - ``plateau``: ReduceLROnPlateau on ``monitor`` (``mode``), factor ``plateau_factor``,
      patience ``plateau_patience`` epochs.
    - ``none``: a constant learning rate.
    """
    name = trainer_cfg.optimizer.lower()
    lr, wd = trainer_cfg.lr, trainer_cfg.weight_decay
    if name == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=wd)
    elif name == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    else:  # sgd (trainer.optimizer and .scheduler are Literals, checked by the config)
        opt = torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=0.9, nesterov=True)

    sched = trainer_cfg.scheduler.lower()
    if sched == "none":
        return {"optimizer": opt}
    if sched == "cosine":
        total = max(1, trainer_cfg.epochs * max(1, steps_per_epoch))
        warmup = min(total - 1, max(0, int(trainer_cfg.warmup_epochs * max(1, steps_per_epoch))))
        lam = _cosine_with_warmup(warmup, total)
        return {"optimizer": opt, "lr_scheduler": {
            "scheduler": torch.optim.lr_scheduler.LambdaLR(opt, lam), "interval": "step"}}
    else:  # plateau
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode=mode, factor=trainer_cfg.plateau_factor,
            patience=trainer_cfg.plateau_patience)
        return {"optimizer": opt, "lr_scheduler": {
            "scheduler": plateau, "interval": "epoch", "monitor": monitor}}


class _cosine_with_warmup:  # noqa: N801 (a picklable lambda)
    """LR multiplier at step s: ``(s+1)/warmup`` during warmup, then half a cosine to 0."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = warmup, total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


# names used in docs/architecture.md
configure_optim = configure_optimizers
resume_path = resume_checkpoint

__all__ = ["build_trainer", "peak_rss_mb", "torchrun_layout", "world_size",
           "EpochShuffleSampler", "clip_loader", "best_checkpoint_path", "early_stop_info", "fit",
           "TrainingInterrupted", "resume_hint", "discard_run",
           "resume_checkpoint", "configure_optimizers", "configure_optim", "resume_path",
           "CHECKPOINT_DIR", "LAST_CKPT"]
