"""Checkpoint versions and migrations: every format written by the previous version loads,
migrates and computes what it computed then; a newer version is refused clearly.

``tests/data/checkpoints/v1/`` was written by l2i before format version 2
(``tools/make_old_checkpoints.py``, run with that l2i; its ``expected.pt`` holds the outputs
it computed).
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from l2i import checkpoints as CK
from l2i import features as feats
from l2i.errors import L2IError

DATA = Path(__file__).resolve().parent / "data" / "checkpoints"
V1 = DATA / "v1"
CODE_MODULE = f"{DATA / 'tiny_code_model.py'}:build"


def _tool():
    path = Path(__file__).resolve().parents[1] / "tools" / "make_old_checkpoints.py"
    spec = importlib.util.spec_from_file_location("make_old_checkpoints", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def expected():
    return torch.load(V1 / "expected.pt", weights_only=True)


def _mag(features):
    return feats.magnitude(feats.stft(_tool().probe_clip(), features))  # (1, T, F)


def test_the_old_files_are_version_1_and_small():
    for name in ("classifier.ckpt", "nmf.pt", "l2i.ckpt", "lmac.ckpt", "code_record.pt"):
        rec = torch.load(V1 / name, weights_only=True)
        assert rec["version"] == 1 and rec["format"].startswith("l2i-")
        assert (V1 / name).stat().st_size < 64_000
    assert all(v == 2 for v in CK.CURRENT.values())


def test_v1_classifier_loads_and_computes_the_same(expected):
    from l2i.config import FeaturesConfig
    from l2i.models import load_classifier

    model, _ = load_classifier(V1 / "classifier.ckpt")
    rec = torch.load(V1 / "classifier.ckpt", weights_only=True)
    with torch.no_grad():
        logits, _ = model(_mag(FeaturesConfig(**rec["features"])))
    torch.testing.assert_close(logits, expected["classifier_logits"])


def test_v1_nmf_loads_the_same_dictionary(expected):
    from l2i.nmf import load_dictionary

    W, found = load_dictionary(V1 / "nmf.pt")
    torch.testing.assert_close(W, expected["W"])
    assert found["n_fft"] == 64


def test_v1_interpreter_loads_migrates_and_explains_the_same(expected, tmp_path):
    from l2i.interpreter import load_interpreter, save_interpreter

    interp = load_interpreter(V1 / "l2i.ckpt")
    assert interp.theta.normalize is True  # stated in this v1 record: kept
    with torch.no_grad():
        o = interp(_mag(interp.features))
    torch.testing.assert_close(o.H, expected["H"])
    torch.testing.assert_close(o.theta_logits, expected["theta_logits"])
    # re-saved, it is a version-2 record that loads to the same numbers
    save_interpreter(tmp_path / "l2i.ckpt", interp)
    rec = torch.load(tmp_path / "l2i.ckpt", weights_only=True)
    assert rec["version"] == 2 and rec["l2i_version"]
    with torch.no_grad():
        again = load_interpreter(tmp_path / "l2i.ckpt")(_mag(interp.features))
    torch.testing.assert_close(again.theta_logits, expected["theta_logits"])


def test_v1_lmac_loads_and_computes_the_same(expected):
    from l2i.explainers.base import SpecBatch
    from l2i.explainers.lmac import LMACExplainer

    ex = LMACExplainer.load(V1 / "lmac.ckpt")
    mag = _mag(ex.features)
    logits = ex.mask_logits(SpecBatch(mag, torch.zeros_like(mag), None))
    torch.testing.assert_close(logits, expected["lmac_logits"])


def test_v1_code_classifier_record_loads():
    from l2i.models.hooked import load_code_classifier

    rec = torch.load(V1 / "code_record.pt", weights_only=True)
    clf = load_code_classifier(rec, module=CODE_MODULE)
    assert clf.n_classes == 3 and clf.map_names == ("conv",)


def test_theta_without_normalize_is_migrated_to_what_it_meant():
    """An interpreter written before theta's ``normalize`` existed ran without it."""
    rec = torch.load(V1 / "l2i.ckpt", weights_only=True)
    del rec["theta"]["config"]["normalize"]
    before = copy.deepcopy(rec)
    out = CK.migrate(rec, CK.INTERPRETER)
    assert out["version"] == 2 and out["theta"]["config"]["normalize"] is False
    # the caller's dict is left as it was
    assert rec["version"] == 1 and rec["theta"]["config"] == before["theta"]["config"]
    assert rec["psi"]["config"] == before["psi"]["config"] and "l2i_version" not in rec
    assert set(out["psi"]["config"]) >= {"hidden", "activation", "freq_reduce"}


def test_a_newer_version_is_refused_naming_the_file(tmp_path):
    from l2i.interpreter import load_interpreter
    from l2i.nmf import load_dictionary

    for name, load in (("l2i.ckpt", load_interpreter), ("nmf.pt", load_dictionary)):
        rec = torch.load(V1 / name, weights_only=True)
        rec["version"] = 3
        torch.save(rec, tmp_path / name)
        with pytest.raises(L2IError, match=rf"{name}.*version 3, this l2i reads up to 2: "
                                           "upgrade l2i"):
            load(tmp_path / name)


def test_rename_and_remove_steps(monkeypatch):
    """A later rename or removal is one migration step (here a made-up version 3)."""
    def step(rec):
        CK.rename_key(rec, "psi.config.hidden", "psi.config.width")
        CK.remove_key(rec, "loss.relevance_th")
        CK.remove_key(rec, "no.such.key")
        rec["version"] = 3
        return rec

    monkeypatch.setitem(CK.CURRENT, CK.INTERPRETER, 3)
    monkeypatch.setitem(CK.MIGRATIONS, CK.INTERPRETER, {**CK.MIGRATIONS[CK.INTERPRETER],
                                                        2: step})
    rec = torch.load(V1 / "l2i.ckpt", weights_only=True)
    out = CK.migrate(rec, CK.INTERPRETER, "x.ckpt")
    assert out["version"] == 3 and out["psi"]["config"]["width"] == 4
    assert "hidden" not in out["psi"]["config"] and "relevance_th" not in out["loss"]
    monkeypatch.setitem(CK.MIGRATIONS, CK.INTERPRETER, {1: CK.MIGRATIONS[CK.INTERPRETER][1]})
    with pytest.raises(L2IError, match="no migration from l2i-interpreter version 2"):
        CK.migrate(rec, CK.INTERPRETER, "x.ckpt")


def test_the_tool_writes_every_format(tmp_path):
    """tools/make_old_checkpoints.py runs on this l2i too (it writes the next 'old' files)."""
    _tool().main([str(tmp_path / "now")])
    for name in ("classifier.ckpt", "nmf.pt", "l2i.ckpt", "lmac.ckpt", "code_record.pt"):
        rec = torch.load(tmp_path / "now" / name, weights_only=True)
        assert rec["version"] == CK.CURRENT[rec["format"]]
    shutil.rmtree(tmp_path / "now")
