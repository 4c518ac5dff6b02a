"""``l2i prepare`` shards: read back equal to load_split; ShardStream deals every clip exactly
once per epoch across DDP ranks x DataLoader workers, shuffled across shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from l2i import cli
from l2i.data import load_dataset, load_split
from l2i.errors import DataError
from l2i.shards import ShardStream, epoch_order, read_index, read_split

SR = 8000  # conftest's tiny dataset
FOLDS = ["--data.train_folds", "1,2", "--data.valid_folds", "3", "--data.test_folds", "4"]


@pytest.fixture(scope="module")
def shards(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "s"
    rc = cli.main(["prepare", str(tiny_dataset), "--output_folder", str(out),
                   "--sample_rate", str(SR), "--clips_per_shard", "3", "--dtype", "float32",
                   "--progress", "false", *FOLDS, "--data.duration_s", "1.0"])
    assert rc == 0
    return out


def test_prepare_reads_back_equal_to_load_split(shards, tiny_dataset, tiny_data_config):
    index = load_dataset(tiny_dataset, tiny_data_config)
    meta = read_index(shards)
    assert meta["sample_rate"] == SR and meta["class_names"] == index.class_names
    for split in ("train", "valid", "test"):
        ref = load_split(index, split, tiny_data_config, SR, progress=False)
        wavs, sp = read_split(shards, split)
        assert sp.ids == ref.ids and np.array_equal(sp.labels, ref.labels)
        np.testing.assert_array_equal(wavs, np.asarray(ref.wavs))
        assert set(sp.folds.tolist()) == set(getattr(tiny_data_config, f"{split}_folds"))
    assert len(meta["splits"]["train"]["shards"]) == 6  # 16 clips, 3 per shard
    assert not (shards.parent / "s.tmp").exists()


def test_prepare_refuses_a_used_folder_and_variable_length(shards, tiny_dataset, tmp_path,
                                                            capsys):
    before = sorted(p.name for p in shards.iterdir())
    assert cli.main(["prepare", str(tiny_dataset), "--output_folder", str(shards)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in shards.iterdir()) == before  # left as it was
    assert cli.main(["prepare", str(tiny_dataset), "--output_folder", str(tmp_path / "v"),
                     *FOLDS, "--data.duration_s", "null"]) == 2
    assert "duration_s" in capsys.readouterr().err
    assert not (tmp_path / "v").exists() and not (tmp_path / "v.tmp").exists()


def _stream(shards, rank: int, epoch: int, workers: int) -> tuple[list[int], torch.Tensor]:
    ds = ShardStream(shards, "train", shuffle=True, seed=3, rank=rank, world_size=2)
    ds.set_epoch(epoch)
    seen, wavs = [], []
    for batch in DataLoader(ds, batch_size=2, num_workers=workers):
        seen += batch["index"].tolist()
        wavs.append(batch["wav"])
    return seen, torch.cat(wavs)


def test_stream_sees_every_clip_once_per_epoch_across_ranks_and_workers(shards):
    wavs, sp = read_split(shards, "train")
    orders = []
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            idx, got = _stream(shards, rank, epoch, workers=2)
            assert len(idx) == len(sp) // 2  # equal steps on both ranks
            np.testing.assert_array_equal(got.numpy(), wavs[idx])  # the right audio
            seen += idx
        assert sorted(seen) == list(range(len(sp)))  # exactly once
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled each epoch
    first = epoch_order([3, 3, 3, 3, 3, 1], seed=3, epoch=0, shuffle=True)[:, 0]
    assert first[0] != 0 or first[3] != 1  # shard order is permuted, not 0, 1, 2, ...


def test_stream_pads_ranks_evenly_and_checks_the_folder(shards, tmp_path):
    ds = [ShardStream(shards, "valid", shuffle=False, rank=r, world_size=3) for r in range(3)]
    n = len(read_split(shards, "valid")[1])  # 8 clips over 3 ranks: 3 each, one repeated
    assert [len(d) for d in ds] == [-(-n // 3)] * 3
    assert sorted({i for d in ds for i in (x["index"] for x in d)}) == list(range(n))
    with pytest.raises(DataError, match="l2i prepare"):
        ShardStream(tmp_path, "train")
    (tmp_path / "index.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="format"):
        ShardStream(tmp_path, "train")


def test_a_shards_folder_is_a_data_folder(shards, tiny_dataset, tiny_data_config):
    from dataclasses import replace

    from l2i.training.interpreter import WaveSplit

    cfg = replace(tiny_data_config, train_folds=[1], valid_folds=[2, 3])  # folds re-assigned
    orig, sh = load_dataset(tiny_dataset, cfg), load_dataset(shards, cfg, sample_rate=SR)
    assert sh.shards is not None and sh.class_names == orig.class_names
    for split in ("train", "valid", "test"):
        ref = load_split(orig, split, cfg, SR, progress=False)
        got = load_split(sh, split, cfg, SR)
        assert got.wavs.shape == np.asarray(ref.wavs).shape
        pos = {cid: i for i, cid in enumerate(ref.ids)}  # same clips; order follows the shards
        order = [pos[cid] for cid in got.ids]
        assert sorted(order) == list(range(len(ref.ids)))
        np.testing.assert_array_equal(got.labels, ref.labels[order])
        np.testing.assert_array_equal(np.asarray(got.wavs), np.asarray(ref.wavs)[order])
    train = load_split(sh, "train", cfg, SR)
    batch = WaveSplit(train.wavs, train.labels).__getitems__([3, 0, 5])  # across shards
    np.testing.assert_array_equal(batch["wav"].numpy(), np.asarray(train.wavs)[[3, 0, 5]])
    with pytest.raises(DataError, match="re-run l2i prepare"):
        load_split(sh, "train", cfg, 16000)
