"""Loading SpeechBrain CNN14 pairs and PANNs Cnn14 checkpoints (state dicts built here).

Nothing is dropped in silence: each load returns a report, a dropped head or normalisation layer
is an error unless ``allow_partial``, and a SpeechBrain head's rows are mapped by class name from
its ``label_encoder.txt``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from cnn14_reference import cnn14_embedding

from l2i.config import ClassifierModelConfig, FeaturesConfig
from l2i.errors import L2IError
from l2i.models import build_classifier
from l2i.models.cnn14 import CNN14
from l2i.models.pretrained import (
    load_pretrained,
    map_panns,
    map_speechbrain_embedding,
    read_label_encoder,
)

FEAT = FeaturesConfig(sample_rate=8000, n_fft=256, n_mels=32)
SMALL = (2, 2, 4, 4, 8, 16)  # the CNN14 layout and key names, narrow (fast to build)
SB_ORDER = ["dog", "rooster", "rain", "sea_waves"]  # SpeechBrain's indices 0..3


def write_label_encoder(path, names: list[str]) -> None:
    """A ``label_encoder.txt`` as SpeechBrain's CategoricalEncoder saves it."""
    lines = [f"{name!r} => {i}" for i, name in enumerate(names)]
    path.write_text("\n".join(lines + ["================", "'starting_index' => 0", ""]))


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


def _sb_pair(folder, donor, head_rows: int = 4, labels: list[str] | None = SB_ORDER) -> None:
    emb = {k: v for k, v in donor.items() if not k.startswith("classifier.")}
    torch.save(emb, folder / "embedding_model.ckpt")
    torch.save({"weight": donor["classifier.weight"][:head_rows],
                "bias": donor["classifier.bias"][:head_rows]}, folder / "classifier.ckpt")
    if labels is not None:
        write_label_encoder(folder / "label_encoder.txt", labels)


def test_label_encoder_is_read_in_index_order(tmp_path):
    path = tmp_path / "label_encoder.txt"
    path.write_text("'rain' => 1\n'dog' => 0\n\"it's\" => 2\n================\n"
                    "'starting_index' => 0\n")
    assert read_label_encoder(path) == ["dog", "rain", "it's"]
    path.write_text("'dog' => 0\n'rain' => 2\n")
    with pytest.raises(L2IError, match="indices must be 0..C-1"):
        read_label_encoder(path)
    path.write_text("dog: 0\n")
    with pytest.raises(L2IError, match=r"label_encoder.txt:1"):
        read_label_encoder(path)


def test_speechbrain_pair_same_order(tmp_path, donor):
    _sb_pair(tmp_path, donor)
    model = _fresh()
    report = load_pretrained(model, tmp_path, class_names=SB_ORDER)
    assert report.kind == "speechbrain-cnn14" and report.missing == [] and report.dropped == []
    assert len(report.loaded) == len(model.state_dict())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, donor[k], msg=k)


def test_speechbrain_head_rows_follow_class_names(tmp_path, donor):
    """ESC-50 target order differs from SpeechBrain's: rows move with their class names."""
    _sb_pair(tmp_path, donor)
    names = ["rain", "dog", "sea_waves", "rooster"]  # the data's label order
    model = _fresh()
    report = load_pretrained(model, tmp_path, class_names=names)
    for i, name in enumerate(names):
        j = SB_ORDER.index(name)
        torch.testing.assert_close(model.classifier.weight[i], donor["classifier.weight"][j])
        torch.testing.assert_close(model.classifier.bias[i], donor["classifier.bias"][j])
    assert any("mapped by class name" in n for n in report.notes)
    # a subset of the classes (ESC-10 out of ESC-50) selects their rows
    sub = _fresh(n_classes=2)
    load_pretrained(sub, tmp_path, class_names=["sea_waves", "dog"])
    torch.testing.assert_close(sub.classifier.weight[0], donor["classifier.weight"][3])


def test_speechbrain_head_refused_without_its_class_order(tmp_path, donor):
    _sb_pair(tmp_path, donor, labels=None)
    with pytest.raises(L2IError, match="label_encoder.txt not found"):
        load_pretrained(_fresh(), tmp_path, class_names=SB_ORDER)
    with pytest.raises(L2IError, match="class names of the data are needed"):
        load_pretrained(_fresh(), tmp_path)
    write_label_encoder(tmp_path / "label_encoder.txt", SB_ORDER)
    with pytest.raises(L2IError, match=r"classes \['cat'\] are not in"):
        load_pretrained(_fresh(), tmp_path, class_names=["dog", "cat", "rain", "sea_waves"])
    model = _fresh()
    fresh_head = model.classifier.weight.detach().clone()
    report = load_pretrained(model, tmp_path, class_names=["dog", "cat", "rain", "sea_waves"],
                             allow_partial=True)
    assert report.missing == ["classifier.bias", "classifier.weight"]
    assert len(report.dropped) == 2 and "class order unknown" in report.dropped[0]
    torch.testing.assert_close(model.classifier.weight, fresh_head)


def test_speechbrain_head_of_other_size_is_an_error_unless_partial(tmp_path, donor):
    emb = {k: v for k, v in donor.items() if not k.startswith("classifier.")}
    torch.save(emb, tmp_path / "embedding_model.ckpt")
    torch.save({"weight": torch.zeros(4, 8), "bias": torch.zeros(4)},
               tmp_path / "classifier.ckpt")  # a head for another embedding size
    write_label_encoder(tmp_path / "label_encoder.txt", SB_ORDER)
    with pytest.raises(L2IError, match="(?s)head does not fit the model.*allow_partial"):
        load_pretrained(_fresh(), tmp_path, class_names=SB_ORDER)
    model = _fresh()
    report = load_pretrained(model, tmp_path / "embedding_model.ckpt", class_names=SB_ORDER,
                             allow_partial=True)
    assert report.missing == ["classifier.bias", "classifier.weight"]
    assert len(report.dropped) == 2
    torch.testing.assert_close(model.conv_block3.conv1.weight, donor["conv_block3.conv1.weight"])
    assert model.classifier.weight.abs().sum() > 0  # fresh init, not the zeros
    torch.save({"weight": torch.zeros(5, 16), "bias": torch.zeros(5)},
               tmp_path / "classifier.ckpt")  # 5 rows, the label file lists 4 classes
    with pytest.raises(L2IError, match="has 5 rows but"):
        load_pretrained(_fresh(), tmp_path, class_names=SB_ORDER)


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
    with pytest.raises(L2IError, match="ECAPA cosine head belongs to the conv2d"):
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


def test_panns_backbone_drops_only_when_allowed(tmp_path, donor):
    torch.save({"model": _panns_dict(donor, n_mels=64)}, tmp_path / "Cnn14.pth")
    with pytest.raises(L2IError, match="(?s)fc_audioset.bias: the 527-class AudioSet head.*"
                       "allow_partial"):
        load_pretrained(_fresh(n_mels=64), tmp_path / "Cnn14.pth")
    with pytest.raises(L2IError, match="(?s)AudioSet head.*bn0.weight: bn0 "
                       "normalises 64 mel bins, this model has 32"):  # every drop at once
        load_pretrained(_fresh(n_mels=32), tmp_path / "Cnn14.pth", allow_partial=False)
    model = _fresh(n_mels=32)  # 32 mels: PANNs' 64-bin bn0 cannot be used
    norm0_before = model.norm0.weight.clone()
    report = load_pretrained(model, tmp_path / "Cnn14.pth", allow_partial=True)
    assert report.kind == "panns"
    dropped = " ".join(report.dropped)
    assert "fc_audioset.weight" in dropped and "bn0.weight" in dropped
    assert any(k.startswith("logmel_extractor.melW") for k in report.ignored)
    assert set(report.missing) == {"classifier.weight", "classifier.bias", "norm0.weight",
                                   "norm0.bias", "norm0.running_mean", "norm0.running_var",
                                   "norm0.num_batches_tracked"}
    torch.testing.assert_close(model.conv_block5.norm1.running_mean,
                               donor["conv_block5.norm1.running_mean"])
    torch.testing.assert_close(model.norm0.weight, norm0_before)

    model64 = _fresh(n_mels=64)
    report = load_pretrained(model64, tmp_path / "Cnn14.pth", allow_partial=True)
    torch.testing.assert_close(model64.norm0.weight, torch.full((64,), 0.5))
    assert "norm0.weight" in report.loaded and not any("bn0" in d for d in report.dropped)


def test_panns_unexpected_key_and_wrong_arch(tmp_path, donor):
    sd = _panns_dict(donor, 64)
    sd["att_block.att.weight"] = torch.zeros(1)
    with pytest.raises(L2IError, match="att_block.att.weight"):
        map_panns(sd)
    mapped, rest = map_panns({"module." + k: v for k, v in _panns_dict(donor, 64).items()})
    assert "conv_block1.norm1.weight" in mapped and "fc1.bias" in rest
    conv2d = build_classifier(ClassifierModelConfig(arch="conv2d", width=2), FEAT, 3)
    with pytest.raises(L2IError, match="only supported for model.arch: cnn14 or sb_conv2d"):
        load_pretrained(conv2d, tmp_path)
    with pytest.raises(L2IError, match="not found"):
        load_pretrained(_fresh(), tmp_path / "missing.pth")


def test_build_classifier_prints_the_report(tmp_path, donor, capsys, monkeypatch):
    import l2i.models as models

    _sb_pair(tmp_path, donor)
    monkeypatch.setattr(models, "_new_model", lambda cfg, feat, n: _fresh(n))  # narrow CNN14
    cfg = ClassifierModelConfig(arch="cnn14", embed_dim=16, pretrained=str(tmp_path))
    lines: list[str] = []
    model = build_classifier(cfg, FEAT, 4, class_names=SB_ORDER, log=lines.append)
    torch.testing.assert_close(model.classifier.weight, donor["classifier.weight"])
    assert len(lines) == 1 and "loaded  " in lines[0] and "missing (fresh init) 0" in lines[0]
    build_classifier(cfg, FEAT, 4, class_names=SB_ORDER)  # default: stderr
    assert "pretrained weights (speechbrain-cnn14)" in capsys.readouterr().err
    build_classifier(cfg, FEAT, 4, load_pretrained=False, log=lines.append)  # load_classifier
    assert len(lines) == 1
    with pytest.raises(L2IError, match="class names of the data"):  # never in silence
        build_classifier(cfg, FEAT, 4)
    cfg.allow_partial = True
    build_classifier(cfg, FEAT, 4, log=lines.append)
    assert "dropped 2" in lines[-1]


# ------------------------------------------------------------------ SpeechBrain CNN14, exactly
def sb_filterbank(n_mels: int, sample_rate: int, n_fft: int) -> torch.Tensor:
    """speechbrain.processing.features.Filterbank (triangular, frozen, log_mel=False), as
    written there: HTK mel points, ``band = hz[1:] - hz[:-1]`` cut to n_mels, symmetric."""
    def to_mel(hz):
        return 2595 * math.log10(1 + hz / 700)

    mel = torch.linspace(to_mel(0), to_mel(sample_rate / 2), n_mels + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    band = (hz[1:] - hz[:-1])[:-1]
    f_central = hz[1:-1]
    all_freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    f_central_mat = f_central.repeat(all_freqs.shape[0], 1).transpose(0, 1)
    band_mat = band.repeat(all_freqs.shape[0], 1).transpose(0, 1)
    slope = (all_freqs - f_central_mat) / band_mat
    return torch.max(torch.zeros(1), torch.min(slope + 1.0, -slope + 1.0)).transpose(0, 1)


def sb_cnn14_logits(sd: dict, head: dict, mag: torch.Tensor, n_mels: int, sr: int,
                    n_fft: int) -> torch.Tensor:
    """The reference's L2I-CNN14 forward (eval): log1p(fbank(|X|)) -> Cnn14 -> Linear."""
    def bn(x, p):
        return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"],
                            sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-5)

    x = torch.log1p(torch.matmul(mag, sb_filterbank(n_mels, sr, n_fft)))[:, None]  # (B,1,T,M)
    x = bn(x.transpose(1, 3), "norm0").transpose(1, 3)
    x = cnn14_embedding(x, sd, bn, "norm1", "norm2")  # (B, 2048)
    return F.linear(x, head["weight"], head["bias"])


def test_speechbrain_cnn14_outputs_exact_with_its_filterbank(tmp_path, donor):
    donor = {k: (v.abs() + 0.5 if k.endswith("running_var") else v) for k, v in donor.items()}
    _sb_pair(tmp_path, donor)
    names = ["sea_waves", "dog", "rain", "rooster"]
    feat = FeaturesConfig(sample_rate=8000, n_fft=256, n_mels=32)
    torch.manual_seed(3)
    mag = torch.rand(2, 64, 129) ** 3 * 4  # (B, T, F) magnitudes
    sd = {k: v for k, v in donor.items() if not k.startswith("classifier.")}
    head = {"weight": donor["classifier.weight"], "bias": donor["classifier.bias"]}
    ref = sb_cnn14_logits(sd, head, mag, 32, 8000, 256)
    assert ref.std() > 0.1 and torch.isfinite(ref).all()
    order = [SB_ORDER.index(n) for n in names]
    model = CNN14(feat, 4, input="log1p_mel_sb", embed_dim=16, channels=SMALL)
    report = load_pretrained(model, tmp_path, class_names=names)
    assert not any("log1p_mel_sb feeds it exactly" in n for n in report.notes)
    with torch.no_grad():
        logits, _ = model.eval()(mag)
    torch.testing.assert_close(logits, ref[:, order], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.frontend.fb, sb_filterbank(32, 8000, 256))
    plain = CNN14(feat, 4, input="log1p_mel", embed_dim=16, channels=SMALL)  # l2i's own mel
    report = load_pretrained(plain, tmp_path, class_names=names)
    assert any("log1p_mel_sb feeds it exactly" in n for n in report.notes)
    with torch.no_grad():
        assert not torch.allclose(plain.eval()(mag)[0], ref[:, order], rtol=1e-4, atol=1e-5)
