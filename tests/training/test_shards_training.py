"""Training from ``l2i prepare`` shards: ``--data_folder SHARDS`` trains the same weights as the
original dataset folder (same clips, same order, float32 shards)."""

from __future__ import annotations

import torch
from test_interpreter_training import _cfg, artefacts  # noqa: F401 (a fixture)

from l2i.config import DataConfig
from l2i.data import load_dataset
from l2i.shards import write_shards
from l2i.training.interpreter import train_interpreter


def _weights(out) -> dict[str, torch.Tensor]:
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith(("interp.psi.", "interp.theta."))}


def test_train_from_shards_equals_train_from_files(artefacts, tiny_dataset,  # noqa: F811
                                                   tiny_features, tmp_path):
    torch.set_num_threads(1)
    data = DataConfig(train_folds=[1, 2], valid_folds=[3], test_folds=[4], duration_s=1.0)
    shards = write_shards(load_dataset(tiny_dataset, data), data, tiny_features.sample_rate,
                          tmp_path / "shards", clips_per_shard=5, dtype="float32")
    weights = []
    for name, folder in (("files", tiny_dataset), ("shards", shards)):
        out = tmp_path / name
        train_interpreter(_cfg(artefacts, folder, out, **{"trainer.epochs": 2}))
        weights.append(_weights(out))
    assert weights[0].keys() == weights[1].keys() and weights[0]
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], msg=k)
