"""``l2i prepare`` shards: read back equal to load_split; the training loader
(``clip_loader`` / ``ClipBatchSampler``) deals every clip exactly once per epoch across DDP
ranks x DataLoader workers, shuffled across shards through a bounded buffer."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from l2i import cli
from l2i.data import load_dataset, load_split
from l2i.errors import DataError
from l2i.shards import (
    ClipBatchSampler,
    buffer_shuffle,
    epoch_order,
    read_index,
    read_split,
)
from l2i.training.common import clip_loader

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


class _Indexed(torch.utils.data.Dataset):
    """A split's clips read a batch at a time: ``{"wav": (B, S), "index": (B,)}``."""

    def __init__(self, arrays) -> None:
        self.wavs = arrays.wavs  # a ShardedArray: clip_loader reads its shard of each clip

    def __len__(self) -> int:
        return len(self.wavs)

    def __getitems__(self, idx: list[int]) -> dict:
        return {"wav": torch.from_numpy(self.wavs[np.asarray(idx)]), "index": torch.tensor(idx)}


def _epoch(ds, rank: int, epoch: int, workers: int, world: int = 2, buffer: int = 4,
           seed: int = 3) -> tuple[list[int], np.ndarray]:
    """(clip indices, waveforms (n, S)) one rank reads in one epoch through clip_loader."""
    loader = clip_loader(ds, 2, True, seed, workers, buffer=buffer, rank=rank, world_size=world)
    loader.batch_sampler.sampler.set_epoch(epoch)  # what Lightning calls each epoch
    seen, wavs = [], []
    for batch in loader:
        seen += batch["index"].tolist()
        wavs.append(batch["wav"].numpy())
    return seen, np.concatenate(wavs)


def test_shuffle_covers_every_clip_once_per_epoch_across_shards_ranks_and_workers(
        shards, tiny_data_config):
    cfg = replace(tiny_data_config, train_folds=[1, 2], valid_folds=[3], test_folds=[4])
    arrays = load_split(load_dataset(shards, cfg), "train", cfg, SR)  # 16 clips, 6 shards
    ds = _Indexed(arrays)
    full = np.asarray(arrays.wavs)  # (N, S)
    orders = []
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            idx, got = _epoch(ds, rank, epoch, workers=2)
            assert len(idx) == len(arrays) // 2  # 16 clips: 8 per rank, equal steps
            np.testing.assert_array_equal(got, full[idx])  # the right audio for each index
            assert idx == _epoch(ds, rank, epoch, workers=0)[0]  # any number of workers
            seen += idx
        assert sorted(seen) == list(range(len(arrays)))  # every clip exactly once
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled each epoch
    assert _epoch(ds, 0, 1, workers=0)[0] == orders[1][:8]  # identical for a seed
    from lightning.fabric.utilities.data import _set_sampler_epoch

    loader = clip_loader(ds, 2, True, 3, 0, buffer=4, rank=0, world_size=2)
    _set_sampler_epoch(loader, 1)  # how Lightning's fit loop reaches set_epoch
    assert [i for b in loader for i in b["index"].tolist()] == orders[1][:8]
    assert _epoch(ds, 0, 1, workers=0, seed=4)[0] != orders[1][:8]


def test_the_order_runs_through_shards_and_a_bounded_buffer():
    groups = np.repeat(np.arange(6), 10)  # 6 shards of 10 clips
    order = epoch_order(60, seed=0, epoch=0, buffer=4, groups=groups)
    assert sorted(order.tolist()) == list(range(60))
    plain = epoch_order(60, seed=0, epoch=0, buffer=1, groups=groups)  # no buffer
    runs = groups[plain].reshape(6, 10)
    assert (runs == runs[:, :1]).all()  # without a buffer: shard after shard, rows permuted
    assert runs[:, 0].tolist() != list(range(6))  # in a permuted shard order
    # the buffer mixes neighbours: a clip comes out at most `buffer` places earlier
    pos = np.empty(60, dtype=int)
    pos[order] = np.arange(60)
    assert order.tolist() != plain.tolist()
    assert (pos[plain] >= np.arange(60) - 4).all()
    assert np.array_equal(order, epoch_order(60, seed=0, epoch=0, buffer=4, groups=groups))
    assert not np.array_equal(order, epoch_order(60, seed=0, epoch=1, buffer=4, groups=groups))
    # buffer 0: one global permutation, the one DistributedSampler / EpochShuffleSampler draw
    gen = torch.Generator().manual_seed(5 + 2)
    assert epoch_order(60, seed=5, epoch=2).tolist() == torch.randperm(60, generator=gen).tolist()
    assert buffer_shuffle(np.arange(50), 8, np.random.default_rng(0)).tolist() != list(range(50))


def test_ddp_ranks_are_disjoint_and_padded_evenly():
    for world in (2, 3):
        parts = [ClipBatchSampler(8, 2, shuffle=False, rank=r, world_size=world)
                 for r in range(world)]
        got = [[i for b in p for i in b] for p in parts]
        assert [len(p) for p in parts] == [len(list(p)) for p in parts]  # __len__ is right
        assert {len(g) for g in got} == {-(-8 // world)}  # equal steps on every rank
        if world == 2:
            assert set(got[0]).isdisjoint(got[1]) and sorted(got[0] + got[1]) == list(range(8))
        else:  # 8 clips over 3 ranks: 3 each, one clip repeated (wrap, as DistributedSampler)
            assert sorted({i for g in got for i in g}) == list(range(8))
    one = ClipBatchSampler(5, 2, shuffle=True, seed=1, drop_single=True, rank=0, world_size=1)
    assert [len(b) for b in one] == [2, 2] and len(one) == 2  # a lone last clip is dropped


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


def test_a_raw_dataset_is_decoded_once_into_shards_and_reused(tiny_dataset, tiny_data_config,
                                                               tmp_path):
    from l2i.shards import training_index

    cfg, cache = tiny_data_config, tmp_path / "cache"
    index = training_index(tiny_dataset, cfg, SR, cache)
    assert index.shards is not None  # the stage reads shards, written once into its cache
    (folder,) = cache.glob("shards-*")
    ref = load_dataset(tiny_dataset, cfg)
    for split in ("train", "valid", "test"):  # the same clips, order and audio as decoding
        got, want = load_split(index, split, cfg, SR), load_split(ref, split, cfg, SR,
                                                                  progress=False)
        assert got.ids == want.ids and np.array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(np.asarray(got.wavs), np.asarray(want.wavs))
    stamp = (folder / "index.json").stat().st_mtime_ns
    training_index(tiny_dataset, cfg, SR, cache)  # reused while files and settings hold
    assert (folder / "index.json").stat().st_mtime_ns == stamp
    training_index(tiny_dataset, replace(cfg, normalize="none"), SR, cache)
    (other,) = cache.glob("shards-*")  # another setting: decoded afresh, the old one removed
    assert other != folder
    # random crops need the whole clips: decoded as before, into the stage's audio cache
    crops = training_index(tiny_dataset, replace(cfg, crop="random"), SR, tmp_path / "c2",
                           random_crop=True)
    assert crops.shards is None and not list((tmp_path / "c2").glob("shards-*"))
