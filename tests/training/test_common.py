"""Lightning plumbing: devices, optimiser/schedule, resume rules, the Trainer's outputs."""

from __future__ import annotations

import math
from dataclasses import replace

import lightning as L
import pytest
import torch
import yaml

from l2i.config import ClassifierRecipe, TrainerConfig, save_config
from l2i.errors import ConfigError, L2IError
from l2i.training.common import (
    build_trainer,
    configure_optimizers,
    early_stop_info,
    resume_checkpoint,
)


def _lrs(cfg: TrainerConfig, steps_per_epoch: int) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt_cfg = configure_optimizers([p], cfg, steps_per_epoch)
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    out = []
    for _ in range(cfg.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_with_warmup_per_step():
    cfg = TrainerConfig(epochs=4, lr=1.0, warmup_epochs=1, scheduler="cosine")
    lrs = _lrs(cfg, steps_per_epoch=2)  # 8 steps, 2 of warmup
    assert lrs[:2] == pytest.approx([0.5, 1.0])  # linear warmup
    # then half a cosine over the 6 remaining steps: 0.5 * (1 + cos(pi * k / 6))
    assert lrs[2:] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)])
    assert lrs[-1] < 0.07


def test_optimizers_and_schedulers():
    p = [torch.nn.Parameter(torch.zeros(2))]
    cfg = TrainerConfig(optimizer="sgd", scheduler="plateau", lr=0.1, plateau_patience=2)
    out = configure_optimizers(p, cfg, 3, monitor="valid_acc", mode="max")
    assert isinstance(out["optimizer"], torch.optim.SGD)
    assert out["lr_scheduler"]["monitor"] == "valid_acc"
    assert isinstance(out["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    out = configure_optimizers(p, TrainerConfig(optimizer="adam", scheduler="none"), 3)
    assert isinstance(out["optimizer"], torch.optim.Adam) and "lr_scheduler" not in out
    with pytest.raises(ConfigError, match="trainer.optimizer.*'lion'"):
        configure_optimizers(p, TrainerConfig(optimizer="lion"), 3)
    with pytest.raises(ConfigError, match="trainer.scheduler.*'step'"):
        configure_optimizers(p, TrainerConfig(scheduler="step"), 3)


def test_resume_rules(tmp_path):
    cfg = TrainerConfig()
    assert resume_checkpoint(tmp_path, cfg, final="model.ckpt") is None  # fresh folder
    with pytest.raises(L2IError, match="no checkpoint to resume from"):
        resume_checkpoint(tmp_path, TrainerConfig(resume=True))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(L2IError, match="interrupted run"):
        resume_checkpoint(tmp_path, cfg, final="model.ckpt")
    (tmp_path / "model.ckpt").write_bytes(b"x")
    with pytest.raises(L2IError, match="finished run"):
        resume_checkpoint(tmp_path, cfg, final="model.ckpt")
    last = resume_checkpoint(tmp_path, TrainerConfig(resume=True), final="model.ckpt")
    assert last == str(tmp_path / "checkpoints" / "last.ckpt")


class _Toy(L.LightningModule):
    def __init__(self, cfg: TrainerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.lin = torch.nn.Linear(3, 2)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.lin(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("valid_acc", (self.lin(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return configure_optimizers(self.parameters(), self.cfg, 2)


def _fit(tmp_path, cfg: TrainerConfig) -> tuple:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 3), torch.randint(0, 2, (16,)))
    dl = torch.utils.data.DataLoader(data, batch_size=8)
    trainer = build_trainer(cfg, tmp_path, "valid_acc", "max")
    model = _Toy(cfg)
    trainer.fit(model, dl, dl, ckpt_path=resume_checkpoint(tmp_path, cfg))
    return trainer, model


def test_build_trainer_checkpoints_logs_and_seed(tmp_path):
    cfg = TrainerConfig(epochs=2, device="cpu", progress=False, seed=7)
    trainer, model = _fit(tmp_path / "a", cfg)
    assert trainer.current_epoch == 2
    names = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    assert "last.ckpt" in names and any(n.startswith("best-epoch") for n in names)
    assert list((tmp_path / "a" / "logs").glob("version_*/metrics.csv"))
    _, model_b = _fit(tmp_path / "b", cfg)  # same seed -> same weights
    torch.testing.assert_close(model.lin.weight, model_b.lin.weight)
    # resuming with more epochs continues from last.ckpt
    trainer_c, _ = _fit(tmp_path / "a", TrainerConfig(epochs=3, device="cpu", progress=False,
                                                      seed=7, resume=True))
    assert trainer_c.current_epoch == 3
    with pytest.raises(ConfigError, match="limit_batches"):
        build_trainer(TrainerConfig(limit_batches=0), tmp_path / "d", "valid_acc", "max")


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path):
    # lr 0: valid_acc never improves after the first epoch, so training stops after
    # 1 + patience epochs instead of 10
    cfg = TrainerConfig(epochs=10, device="cpu", progress=False, patience=2, lr=0.0,
                        scheduler="none", optimizer="sgd")
    trainer, _ = _fit(tmp_path / "a", cfg)
    assert trainer.current_epoch == 3
    assert early_stop_info(trainer) == {"stopped_early": True, "patience": 2}
    trainer, _ = _fit(tmp_path / "b", replace(cfg, patience=0))  # 0 = off
    assert trainer.current_epoch == 10 and not early_stop_info(trainer)["stopped_early"]
    # gains smaller than min_delta do not count: a slowly learning model stops too
    slow = replace(cfg, lr=1e-4, patience=1, min_delta=0.5)
    trainer, _ = _fit(tmp_path / "s", slow)
    assert trainer.current_epoch == 2
    with pytest.raises(ConfigError, match="patience"):
        build_trainer(replace(cfg, patience=-1), tmp_path / "c", "valid_acc", "max")


def test_resume_refuses_a_changed_config_unless_restarted(tmp_path):
    recipe = ClassifierRecipe(trainer=TrainerConfig(lr=1e-3, epochs=5))
    save_config(recipe, tmp_path / "config.yaml")
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"x")
    resume = replace(recipe.trainer, resume=True)
    # epochs, the device and other keys that do not change results may differ
    same = replace(recipe, output_folder="moved", trainer=replace(resume, epochs=9, device="cpu"))
    assert resume_checkpoint(tmp_path, same.trainer, "model.ckpt", config=same) == str(last)
    # a key the interrupted run's config lacks (written before an l2i update) is no change
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del saved["trainer"]["patience"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert resume_checkpoint(tmp_path, same.trainer, "model.ckpt", config=same) == str(last)
    changed = replace(recipe, trainer=replace(resume, lr=0.01))
    with pytest.raises(L2IError, match=r"differs.*trainer.lr: 0.001 -> 0.01.*--trainer.restart"):
        resume_checkpoint(tmp_path, changed.trainer, "model.ckpt", config=changed)
    (tmp_path / "model.ckpt").write_bytes(b"x")
    restart = replace(changed.trainer, restart=True)
    assert resume_checkpoint(tmp_path, restart, "model.ckpt", config=changed) is None
    assert not last.exists() and not (tmp_path / "model.ckpt").exists()
