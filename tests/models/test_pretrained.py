"""Loading SpeechBrain CNN14 pairs and PANNs Cnn14 checkpoints (state dicts built here)."""

from __future__ import annotations

import pytest
import torch

from l2i.config import ClassifierModelConfig, FeaturesConfig
from l2i.errors import L2IError
from l2i.models import build_classifier
from l2i.models.cnn14 import CNN14
from l2i.models.pretrained import load_pretrained, map_panns, map_speechbrain_embedding

FEAT = FeaturesConfig(sample_rate=8000, n_fft=256, n_mels=32)
SMALL = (2, 2, 4, 4, 8, 16)  # the CNN14 layout and key names, narrow (fast to build)


@pytest.fixture(scope="module")
def donor() -> dict:
    """A CNN14 state dict with recognisable values (what a SpeechBrain file holds)."""
    torch.manual_seed(1)
    model = CNN14(FEAT, 4, embed_dim=16, channels=SMALL)
    sd = {k: (v + torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v)
          for k, v in model.state_dict().items()}
    return sd


def _fresh(n_classes: int = 4, n_mels: int = 32) -> CNN14:
    torch.manual_seed(2)
    feat = FeaturesConfig(sample_rate=8000, n_fft=256, n_mels=n_mels)
    return CNN14(feat, n_classes, embed_dim=16, channels=SMALL)


def test_speechbrain_pair(tmp_path, donor):
    emb = {k: v for k, v in donor.items() if not k.startswith("classifier.")}
    torch.save(emb, tmp_path / "embedding_model.ckpt")
    torch.save({"weight": donor["classifier.weight"], "bias": donor["classifier.bias"]},
               tmp_path / "classifier.ckpt")
    model = _fresh()
    info = load_pretrained(model, tmp_path)
    assert info["kind"] == "speechbrain" and info["kept_new"] == []
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, donor[k], msg=k)


def test_speechbrain_head_of_other_size_is_kept_new(tmp_path, donor):
    emb = {k: v for k, v in donor.items() if not k.startswith("classifier.")}
    torch.save(emb, tmp_path / "embedding_model.ckpt")
    torch.save({"weight": torch.zeros(50, 16), "bias": torch.zeros(50)},
               tmp_path / "classifier.ckpt")
    model = _fresh(n_classes=4)
    info = load_pretrained(model, tmp_path / "embedding_model.ckpt")
    assert info["kept_new"] == ["classifier.bias", "classifier.weight"]
    assert len(info["dropped"]) == 2
    torch.testing.assert_close(model.conv_block3.conv1.weight, donor["conv_block3.conv1.weight"])
    assert model.classifier.weight.abs().sum() > 0  # fresh init, not the zeros


def test_speechbrain_missing_and_unexpected_keys(tmp_path, donor):
    emb = {k: v for k, v in donor.items() if not k.startswith("classifier.")}
    del emb["conv_block4.norm2.running_var"]
    torch.save(emb, tmp_path / "embedding_model.ckpt")
    with pytest.raises(L2IError, match=r"missing keys \['conv_block4.norm2.running_var'\]"):
        load_pretrained(_fresh(), tmp_path)
    with pytest.raises(L2IError, match="fc_extra.weight"):
        map_speechbrain_embedding({**emb, "fc_extra.weight": torch.zeros(1)})
    torch.save({"weight": torch.zeros(4, 192), "blocks.0.norm.weight": torch.zeros(3)},
               tmp_path / "classifier.ckpt")
    emb["conv_block4.norm2.running_var"] = donor["conv_block4.norm2.running_var"]
    torch.save(emb, tmp_path / "embedding_model.ckpt")
    with pytest.raises(L2IError, match="ECAPA"):
        load_pretrained(_fresh(), tmp_path)


def test_shape_mismatch_is_listed(tmp_path, donor):
    emb = {k: v for k, v in donor.items() if not k.startswith("classifier.")}
    emb["conv_block2.conv1.weight"] = torch.zeros(2, 2, 5, 5)
    torch.save(emb, tmp_path / "embedding_model.ckpt")
    with pytest.raises(L2IError, match=r"conv_block2.conv1.weight: \(2, 2, 5, 5\)"):
        load_pretrained(_fresh(), tmp_path)


def _panns_dict(donor: dict, n_mels: int) -> dict:
    """A PANNs Cnn14 state dict: bn0/bn1/bn2 names, AudioSet head, feature extractors."""
    sd = {}
    for k, v in donor.items():
        if k.startswith("classifier."):
            continue
        if k.startswith("norm0."):
            v = torch.full((n_mels,), 0.5) if v.dim() == 1 else v
            sd["bn0." + k[len("norm0."):]] = v
        else:
            sd[k.replace(".norm1.", ".bn1.").replace(".norm2.", ".bn2.")] = v
    sd.update({"fc1.weight": torch.zeros(16, 16), "fc1.bias": torch.zeros(16),
               "fc_audioset.weight": torch.zeros(527, 16), "fc_audioset.bias": torch.zeros(527),
               "spectrogram_extractor.stft.conv_real.weight": torch.zeros(513, 1, 1024),
               "logmel_extractor.melW": torch.zeros(513, 64)})
    return sd


def test_panns_backbone(tmp_path, donor):
    torch.save({"model": _panns_dict(donor, n_mels=64)}, tmp_path / "Cnn14.pth")
    model = _fresh(n_mels=32)  # 32 mels: PANNs' 64-bin bn0 cannot be used
    norm0_before = model.norm0.weight.clone()
    info = load_pretrained(model, tmp_path / "Cnn14.pth")
    assert info["kind"] == "panns"
    assert "fc_audioset.weight" in info["dropped"] and "norm0.weight" in info["dropped"]
    assert set(info["kept_new"]) == {"classifier.weight", "classifier.bias", "norm0.weight",
                                     "norm0.bias", "norm0.running_mean", "norm0.running_var",
                                     "norm0.num_batches_tracked"}
    torch.testing.assert_close(model.conv_block5.norm1.running_mean,
                               donor["conv_block5.norm1.running_mean"])
    torch.testing.assert_close(model.norm0.weight, norm0_before)

    torch.save({"model": _panns_dict(donor, n_mels=64)}, tmp_path / "Cnn14_64.pth")
    model64 = _fresh(n_mels=64)
    load_pretrained(model64, tmp_path / "Cnn14_64.pth")
    torch.testing.assert_close(model64.norm0.weight, torch.full((64,), 0.5))


def test_panns_unexpected_key_and_wrong_arch(tmp_path, donor):
    sd = _panns_dict(donor, 64)
    sd["att_block.att.weight"] = torch.zeros(1)
    with pytest.raises(L2IError, match="att_block.att.weight"):
        map_panns(sd)
    mapped, dropped = map_panns({"module." + k: v for k, v in _panns_dict(donor, 64).items()})
    assert "conv_block1.norm1.weight" in mapped and "fc1.bias" in dropped
    conv2d = build_classifier(ClassifierModelConfig(arch="conv2d", width=2), FEAT, 3)
    with pytest.raises(L2IError, match="only supported for model.arch: cnn14"):
        load_pretrained(conv2d, tmp_path)
    with pytest.raises(L2IError, match="not found"):
        load_pretrained(_fresh(), tmp_path / "missing.pth")


def test_pretrained_through_config(monkeypatch):
    import l2i.models.pretrained as pre
    calls = []
    monkeypatch.setattr(pre, "load_pretrained", lambda model, src: calls.append((model, src)))
    cfg = ClassifierModelConfig(arch="conv2d", width=2, pretrained="/some/folder")
    model = build_classifier(cfg, FEAT, 3)
    assert calls == [(model, "/some/folder")]
    build_classifier(cfg, FEAT, 3, load_pretrained=False)  # what load_classifier does
    assert len(calls) == 1
