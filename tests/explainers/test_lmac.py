"""L-MAC: the loss, the decoder, training on tiny data through ``l2i train``, resuming, the
checkpoint and scoring it with ``l2i evaluate``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn import functional as F

from l2i.config import ClassifierModelConfig, LMACConfig
from l2i.errors import L2IError
from l2i.models.lmac import LMACDecoder
from l2i.training.lmac import lmac_loss

RECIPE = "recipes/esc50/lmac_conv2d.yaml"


def test_lmac_loss_hand_computed():
    li = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    lo = torch.tensor([[0.0, 3.0], [1.0, 1.0]])
    mask = torch.full((2, 3, 4), 0.25)
    y = torch.tensor([0, 1])
    cfg = LMACConfig(l_in=4.0, l_out=0.2, l_l1=0.4)
    t = lmac_loss(li, lo, mask, y, cfg)
    ce_in = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    ce_out = (math.log(1 + math.exp(3)) + math.log(2)) / 2
    assert t["ce_in"].item() == pytest.approx(ce_in, rel=1e-6)
    assert t["ce_out"].item() == pytest.approx(ce_out, rel=1e-6)
    assert t["loss"].item() == pytest.approx(4 * ce_in - 0.2 * ce_out + 0.4 * 0.25, rel=1e-6)
    assert torch.allclose(F.cross_entropy(li, y), t["ce_in"])


def test_decoder_shapes_any_map_set():
    dec = LMACDecoder({"a": 6, "b": 10}, {"a": 4, "b": 2}, 129, LMACConfig(hidden=8, n_up=2))
    maps = {"a": torch.randn(3, 6, 7, 4), "b": torch.randn(3, 10, 7, 2)}
    assert dec(maps, 50).shape == (3, 50, 129)
    with pytest.raises(ValueError, match="at least one"):
        LMACDecoder({}, {}, 129, LMACConfig())


@pytest.fixture(scope="module")
def clf_ckpt(tmp_path_factory, tiny_dataset, tiny_features):
    from l2i.config import DataConfig
    from l2i.data import load_dataset
    from l2i.models import build_classifier, save_classifier

    names = list(load_dataset(tiny_dataset, DataConfig(train_folds=[1, 2], valid_folds=[3],
                                                       test_folds=[4])).class_names)
    torch.manual_seed(0)
    mc = ClassifierModelConfig(arch="conv2d", width=4, embed_dim=8)
    model = build_classifier(mc, tiny_features, len(names))
    path = tmp_path_factory.mktemp("clf") / "classifier.ckpt"
    save_classifier(path, model, mc, tiny_features, names)
    return path


def _args(data, clf, out, epochs):
    return ["train", RECIPE, "--data_folder", str(data), "--classifier_ckpt", str(clf),
            "--output_folder", str(out), "--data.train_folds", "1,2", "--data.valid_folds", "3",
            "--data.test_folds", "4", "--data.duration_s", "1.0", "--trainer.epochs", str(epochs),
            "--trainer.batch_size", "8", "--trainer.device", "cpu", "--trainer.progress", "false",
            "--lmac.hidden", "8", "--lmac.n_up", "1"]


def test_lmac_trains_resumes_and_is_scored(tmp_path, tiny_dataset, clf_ckpt, capsys):
    from l2i.cli import main
    from l2i.config import DataConfig, EvaluateRecipe
    from l2i.evaluation import evaluate
    from l2i.explainers import load_explainer
    from l2i.explainers.lmac import LMACExplainer
    from l2i.features import n_frames

    out = tmp_path / "lmac"
    assert main(_args(tiny_dataset, clf_ckpt, out, 1)) == 0  # `method: lmac` dispatches
    said = capsys.readouterr()
    assert "wrote" in said.out
    assert "maps of train: 16 clips x" in said.err and "kept in memory" in said.err  # auto
    record = torch.load(out / "lmac.ckpt", weights_only=True)
    assert record["format"] == "l2i-lmac" and record["version"] == 2
    assert record["metrics"]["epochs"] == 1 and record["metrics"]["cache"] is True
    assert (out / "metrics.json").is_file() and (out / "config.yaml").is_file()
    # a finished run is not overwritten; --trainer.resume continues it
    assert main(_args(tiny_dataset, clf_ckpt, out, 2)) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert main(_args(tiny_dataset, clf_ckpt, out, 2) + ["--trainer.resume", "true"]) == 0
    record = torch.load(out / "lmac.ckpt", weights_only=True)
    assert record["metrics"]["epochs"] == 2
    ex = load_explainer(out / "lmac.ckpt")
    assert isinstance(ex, LMACExplainer) and ex.name == "lmac"
    a = ex.attribute(torch.zeros(2, 8000) + 0.01 * torch.randn(2, 8000))
    assert a.mask.shape == (2, n_frames(8000, ex.features), 129)
    assert 0 <= a.mask.min() <= a.mask.max() <= 1
    # scored like any explainer; the data settings come from its training recipe
    ev = tmp_path / "eval"
    evaluate(EvaluateRecipe(ckpt=str(out / "lmac.ckpt"), output_folder=str(ev), device="cpu",
                            baselines=["ones"], n_examples=1, data=DataConfig()))
    data = json.loads((ev / "metrics.json").read_text())
    assert list(data["explainers"]) == ["lmac", "ones"]
    assert "component_removal" not in data["explainers"]["lmac"]
    assert data["settings"]["test_folds"] == [4]
    assert list(ev.glob("examples/*.lmac.wav"))
    with pytest.raises(L2IError, match="not an L-MAC"):
        LMACExplainer.load(clf_ckpt)


def test_lmac_auto_cache_recomputes_maps_over_the_memory_budget(tmp_path, tiny_dataset,
                                                                clf_ckpt, capsys):
    from l2i.cli import main

    out = tmp_path / "lmac"
    args = _args(tiny_dataset, clf_ckpt, out, 1) + ["--trainer.cache_auto_gb", "1e-6"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "over trainer.cache_auto_gb = 1e-06: recomputed each step" in err
    assert torch.load(out / "lmac.ckpt", weights_only=True)["metrics"]["cache"] is False


def test_lmac_refuses_clip_mixing_before_writing(tmp_path, tiny_dataset, clf_ckpt, capsys):
    from l2i.cli import main

    out = tmp_path / "lmac"
    assert main(_args(tiny_dataset, clf_ckpt, out, 1) + ["--augment.mix_prob", "0.5"]) == 2
    assert "augment.mix_prob = 0.5: method lmac does not mix" in capsys.readouterr().err
    assert not out.exists()


def _decoder_weights(out) -> dict[str, torch.Tensor]:
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if "decoder" in k}


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed absent")
def test_lmac_under_ddp_matches_one_process(tmp_path, tiny_dataset, clf_ckpt):
    # two torchrun processes (gloo, batch 4 each) train the same decoder as one process with
    # batch 8: the loader deals each rank its half of the same global batches
    import os
    import socket
    import subprocess
    import sys

    from l2i.cli import main

    common = ["--trainer.scheduler", "none", "--trainer.lr", "0.01"]
    single = tmp_path / "single"
    assert main(_args(tiny_dataset, clf_ckpt, single, 2) + common) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    ddp = tmp_path / "ddp"
    args = _args(tiny_dataset, clf_ckpt, ddp, 2)
    args[args.index("--trainer.batch_size") + 1] = "4"  # per process
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node",
         "2", "--master_addr", "127.0.0.1", "--master_port", port, "-m", "l2i.cli", *args,
         *common, "--threads", "1"],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _decoder_weights(single), _decoder_weights(ddp)
    assert a.keys() == b.keys() and a
    for k in a:  # atol 1e-4: a conv bias ahead of GroupNorm has a ~0 gradient, and Adam
        # scales its float noise up (3e-5 after 4 steps at lr 0.01; the rest differ by < 2e-6)
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4, msg=k)
