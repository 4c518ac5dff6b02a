"""``l2i prepare DATA --output_folder SHARDS``: check a dataset, decode it once into shards.

Reads whatever :func:`l2i.data.load_dataset` reads (ESC-50 layout, CSV manifest, class
folders, ``--data.*`` as in training), resamples to ``--sample_rate`` and writes the shards of
:mod:`l2i.shards` (``--clips_per_shard``, ``--dtype float16|float32``).
"""

from __future__ import annotations

from l2i.config import PrepareRecipe
from l2i.data import load_dataset
from l2i.shards import check_output_folder, read_index, write_shards


def prepare(cfg: PrepareRecipe) -> str:
    """Write the shards; returns a one-line summary (clips per split, shards, size)."""
    check_output_folder(cfg.output_folder)  # within seconds, before the dataset check
    index = load_dataset(cfg.data_folder, cfg.data)
    out = write_shards(index, cfg.data, cfg.sample_rate, cfg.output_folder,
                       clips_per_shard=cfg.clips_per_shard, dtype=cfg.dtype,
                       progress=cfg.progress)
    meta = read_index(out)
    counts = ", ".join(f"{len(s['ids'])} {name} in {len(s['shards'])} shard(s)"
                       for name, s in meta["splits"].items())
    mb = sum(p.stat().st_size for p in out.glob("*.npy")) / 2**20
    return f"l2i prepare: {counts}; {mb:.1f} MB at {meta['sample_rate']} Hz -> {out}"
