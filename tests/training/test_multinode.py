"""Multi-node DDP: ``torchrun --nnodes 2 --nproc_per_node 1`` on localhost (gloo) trains the same
weights as one process with the same global batch and seed, and resumes from rank 0's
``last.ckpt``."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys

import pytest
import torch
from test_interpreter_training import _cfg, _cli, _env, artefacts  # noqa: F401 (a fixture)

from l2i.training.interpreter import train_interpreter

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or importlib.util.find_spec("torch.distributed.run")
    is None, reason="torch.distributed / torchrun absent")

BATCH = 4  # per process; the single-process reference uses 2 x BATCH
# scheduler none: resuming with more epochs keeps the same LR (a cosine would re-plan itself)
COMMON = ("--trainer.scheduler", "none", "--trainer.lr", "0.01")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _two_nodes(art, data, out, *extra: str) -> None:
    """Start node 0 and node 1 (one process each) as two torchrun invocations, wait for both."""
    port = str(_free_port())
    cli = _cli(art, data, out, "--trainer.batch_size", str(BATCH), *COMMON, *extra)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank",
         str(rank), "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port,
         "-m", "l2i.cli", *cli[3:], "--threads", "1"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)]
    errs = [p.communicate(timeout=240)[1] for p in procs]
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err[-3000:]


def _weights(out) -> dict[str, torch.Tensor]:
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith(("interp.psi.", "interp.theta."))}


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_two_nodes_match_one_process_and_resume(artefacts, tiny_dataset, tmp_path):  # noqa: F811
    torch.set_num_threads(1)
    single = {}
    for epochs in (2, 3):
        out = tmp_path / f"single{epochs}"
        train_interpreter(_cfg(artefacts, tiny_dataset, out, **{
            "trainer.batch_size": 2 * BATCH, "trainer.scheduler": "none", "trainer.lr": 0.01,
            "trainer.epochs": epochs}))
        single[epochs] = _weights(out)
    assert any(not torch.equal(single[2][k], single[3][k]) for k in single[2])  # it trains
    out = tmp_path / "nodes"
    _two_nodes(artefacts, tiny_dataset, out, "--trainer.epochs", "2")
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == "last.ckpt"
    _assert_close(_weights(out), single[2])
    # resume the 2-node run for one more epoch: equals the uninterrupted 3-epoch single run
    _two_nodes(artefacts, tiny_dataset, out, "--trainer.epochs", "3", "--trainer.resume", "true")
    _assert_close(_weights(out), single[3])
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 2
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["epochs"] == 3


def test_torchrun_layout_and_world_size(monkeypatch):
    from l2i.config import TrainerConfig
    from l2i.training.common import torchrun_layout, world_size

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert torchrun_layout() == (1, 0) and world_size(TrainerConfig(devices=3)) == 3
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert torchrun_layout() == (2, 4) and world_size(TrainerConfig()) == 8


def test_epoch_sampler_deals_the_global_batches_ddp_ranks_get():
    from torch.utils.data import DistributedSampler

    from l2i.training.common import EpochShuffleSampler

    data, world, bs = list(range(24)), 2, 4
    one = EpochShuffleSampler(data, seed=7)
    for epoch in (0, 1):
        one.set_epoch(epoch)
        ranks = []
        for r in range(world):
            ds = DistributedSampler(data, num_replicas=world, rank=r, shuffle=True, seed=7)
            ds.set_epoch(epoch)
            ranks.append(list(ds))
        order = list(one)
        for step in range(len(data) // (bs * world)):
            ddp = {i for r in ranks for i in r[step * bs:(step + 1) * bs]}
            assert ddp == set(order[step * bs * world:(step + 1) * bs * world])
    one.set_epoch(0)
    first = list(one)
    one.set_epoch(1)
    assert list(one) != first and sorted(first) == data
