"""SpeechBrain's conv2d ESC-50 classifier (PIQ.Conv2dEncoder_v2 + ECAPA cosine head).

The reference below is written here from SpeechBrain's published modules (``lobes/models/PIQ.py``
``Conv2dEncoder_v2``/``ResBlockAudio``, ``lobes/models/ECAPA_TDNN.py`` ``Classifier`` with its
``nnet.normalization.BatchNorm1d`` and ``nnet.linear.Linear`` wrappers, the interpret recipe's
``preprocess`` and embedding mean), with SpeechBrain's own key names, so its state dict is what
the published ``embedding_modelft.ckpt`` / ``classifier.ckpt`` hold.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from l2i.config import ClassifierModelConfig, FeaturesConfig
from l2i.errors import L2IError
from l2i.features import magnitude, stft
from l2i.models import build_classifier
from l2i.models.speechbrain_conv2d import SBConv2dClassifier

FEAT = FeaturesConfig()  # the reference STFT: 16 kHz, n_fft 1024, Hamming 372 / hop 186
SB_ORDER = ["dog", "chirping_birds", "vacuum_cleaner", "thunderstorm", "door_wood_knock"]


# ------------------------------------------------------------------ SpeechBrain, as written
class SBResBlockAudio(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1), nn.BatchNorm2d(dim),
                                   nn.ReLU(True), nn.Conv2d(dim, dim, 1), nn.BatchNorm2d(dim))

    def forward(self, x):
        return x + self.block(x)


class SBConv2dEncoderV2(nn.Module):
    def __init__(self, dim=256):
        super().__init__()
        self.conv1 = nn.Conv2d(1, dim, 4, 2, 1)
        self.bn1 = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, 4, 2, 1)
        self.bn2 = nn.BatchNorm2d(dim)
        self.conv3 = nn.Conv2d(dim, dim, 4, 2, 1)
        self.bn3 = nn.BatchNorm2d(dim)
        self.conv4 = nn.Conv2d(dim, dim, 4, 2, 1)
        self.bn4 = nn.BatchNorm2d(dim)
        self.resblock = SBResBlockAudio(dim)
        self.nonl = nn.ReLU()

    def forward(self, x):
        x = x.unsqueeze(1)
        h1 = self.nonl(self.bn1(self.conv1(x)))
        h2 = self.nonl(self.bn2(self.conv2(h1)))
        h3 = self.nonl(self.bn3(self.conv3(h2)))
        h4 = self.nonl(self.bn4(self.conv4(h3)))
        return self.resblock(h4)


class SBBatchNorm1d(nn.Module):
    """speechbrain.nnet.normalization.BatchNorm1d on (B, L, C): transpose, BN, transpose."""

    def __init__(self, input_size):
        super().__init__()
        self.norm = nn.BatchNorm1d(input_size, eps=1e-05, momentum=0.1)

    def forward(self, x):
        return self.norm(x.transpose(-1, 1)).transpose(-1, 1)


class SBLinear(nn.Module):
    def __init__(self, input_size, n_neurons):
        super().__init__()
        self.w = nn.Linear(input_size, n_neurons, bias=True)

    def forward(self, x):
        return self.w(x)


class SBClassifier(nn.Module):
    """ECAPA_TDNN.Classifier(input_size, lin_blocks=1, lin_neurons, out_neurons)."""

    def __init__(self, input_size, lin_neurons, out_neurons):
        super().__init__()
        self.blocks = nn.ModuleList([SBBatchNorm1d(input_size), SBLinear(input_size, lin_neurons)])
        self.weight = nn.Parameter(torch.FloatTensor(out_neurons, lin_neurons))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x):
        for layer in self.blocks:
            x = layer(x)
        x = F.linear(F.normalize(x.squeeze(1)), F.normalize(self.weight))
        return x.unsqueeze(1)


def sb_preprocess(wav: torch.Tensor) -> torch.Tensor:
    """STFT (Hamming 372, hop 186, n_fft 1024, centred, zero pad) -> log1p(sqrt(P + 1e-14))."""
    spec = torch.stft(wav, 1024, hop_length=186, win_length=372,
                      window=torch.hamming_window(372), center=True, pad_mode="constant",
                      return_complex=True)
    spec = torch.view_as_real(spec).transpose(1, 2)  # (B, T, F, 2)
    return torch.log1p(torch.sqrt(spec.pow(2).sum(-1) + 1e-14))  # (B, T, F)


def randomise(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith(("running_mean", "bias")):
                t.copy_(0.2 * torch.randn(t.shape, generator=g))
            elif t.dim() == 1:
                t.copy_(1 + 0.2 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(t[0].numel()))


def write_label_encoder(path, names):
    lines = [f"{n!r} => {i}" for i, n in enumerate(names)]
    path.write_text("\n".join(lines + ["================", "'starting_index' => 0", ""]))


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A narrow published-format pair (dim 16, 8 lin neurons, 5 classes) in a folder."""
    folder = tmp_path_factory.mktemp("piq_esc50")
    enc, head = SBConv2dEncoderV2(16).eval(), SBClassifier(16, 8, 5).eval()
    randomise(enc, 0)
    randomise(head, 1)
    torch.save(enc.state_dict(), folder / "embedding_modelft.ckpt")
    torch.save(head.state_dict(), folder / "classifier.ckpt")
    write_label_encoder(folder / "label_encoder.txt", SB_ORDER)
    return folder, enc, head


def _cfg(folder, **kw) -> ClassifierModelConfig:
    return ClassifierModelConfig(arch="sb_conv2d", input="log1p_mag", embed_dim=16,
                                 lin_neurons=8, pretrained=str(folder), **kw)


def test_published_keys_and_shapes():
    """Full size: exactly SpeechBrain's keys (encoder.* / classifier.* prefixes)."""
    model = SBConv2dClassifier(FEAT, 50)
    sd = model.state_dict()
    enc = {k[len("encoder."):]: tuple(v.shape) for k, v in sd.items() if k.startswith("encoder.")}
    head = {k[len("classifier."):]: tuple(v.shape) for k, v in sd.items()
            if k.startswith("classifier.")}
    assert set(enc) == set(SBConv2dEncoderV2(256).state_dict())
    assert enc["conv1.weight"] == (256, 1, 4, 4)
    assert enc["resblock.block.3.weight"] == (256, 256, 1, 1)
    assert sum(p.numel() for p in model.encoder.parameters()) == 3_809_792
    assert head == {"weight": (50, 192), "blocks.0.norm.weight": (256,),
                    "blocks.0.norm.bias": (256,), "blocks.0.norm.running_mean": (256,),
                    "blocks.0.norm.running_var": (256,), "blocks.0.norm.num_batches_tracked": (),
                    "blocks.1.w.weight": (192, 256), "blocks.1.w.bias": (192,)}
    assert len(sd) == len(enc) + len(head)  # nothing else (the mel buffer is not saved)
    narrow = SBConv2dClassifier(FEAT, 3, dim=4, lin_neurons=4).eval()
    with torch.no_grad():
        logits, maps = narrow(torch.rand(2, 431, 513))
    assert maps["hcat"].shape == (2, 4, 26, 32) and logits.shape == (2, 3)
    assert logits.abs().max() <= 1.0 + 1e-6  # cosines


def test_loads_published_pair_and_equals_speechbrain(published):
    folder, enc, head = published
    lines: list[str] = []
    model = build_classifier(_cfg(folder), FEAT, 5, class_names=SB_ORDER, log=lines.append)
    model.eval()
    assert "loaded  " in lines[0] and "missing (fresh init) 0" in lines[0]
    assert "dropped 0" in lines[0] and "ignored 0" in lines[0]
    torch.manual_seed(0)
    t = torch.arange(16000) / 16000
    wav = torch.stack([0.5 * torch.sin(2 * math.pi * 440 * t) + 0.05 * torch.randn(16000),
                       0.3 * torch.randn(16000)])
    x_ref = sb_preprocess(wav)
    x = model.frontend(magnitude(stft(wav, FEAT)))  # l2i's own path: mag (B, T, F) -> log1p
    torch.testing.assert_close(x, x_ref, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        hcat_ref = enc(x_ref)
        logits_ref = head(hcat_ref.mean((-1, -2)).unsqueeze(1)).squeeze(1)
        logits, maps = model.forward_features(x_ref)
    torch.testing.assert_close(maps["hcat"], hcat_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, logits_ref, rtol=1e-4, atol=1e-6)
    assert logits_ref.std() > 0.05  # a real comparison, not two constants
    assert model.temperature == 0.01


def test_head_rows_follow_the_data_class_order(published):
    folder, enc, head = published
    names = ["thunderstorm", "dog", "door_wood_knock"]  # a subset, in another order
    model = build_classifier(_cfg(folder), FEAT, 3, class_names=names, log=lambda s: None)
    model.eval()
    x = torch.rand(2, 87, 513)
    with torch.no_grad():
        ref = head(enc(x).mean((-1, -2)).unsqueeze(1)).squeeze(1)
        logits, _ = model.forward_features(x)
    idx = [SB_ORDER.index(n) for n in names]
    torch.testing.assert_close(logits, ref[:, idx], rtol=1e-4, atol=1e-6)


def test_nothing_optional(published, tmp_path):
    folder, enc, head = published
    sd = enc.state_dict()
    del sd["resblock.block.4.running_var"]
    torch.save(sd, tmp_path / "embedding_model.ckpt")
    torch.save(head.state_dict(), tmp_path / "classifier.ckpt")
    write_label_encoder(tmp_path / "label_encoder.txt", SB_ORDER)
    with pytest.raises(L2IError, match=r"missing keys \['encoder.resblock.block.4.running_var'"):
        build_classifier(_cfg(tmp_path), FEAT, 5, class_names=SB_ORDER)
    torch.save(enc.state_dict(), tmp_path / "embedding_model.ckpt")
    (tmp_path / "classifier.ckpt").unlink()
    with pytest.raises(L2IError, match="classifier.ckpt not found.*allow_partial"):
        build_classifier(_cfg(tmp_path), FEAT, 5, class_names=SB_ORDER)
    lines: list[str] = []
    build_classifier(_cfg(tmp_path, allow_partial=True), FEAT, 5, log=lines.append)
    assert "missing (fresh init) 8" in lines[0]
    with pytest.raises(L2IError, match="set model.input: log1p_mag"):
        build_classifier(ClassifierModelConfig(arch="sb_conv2d"), FEAT, 5)


def test_import_as_an_l2i_checkpoint_with_zero_epochs(tmp_path, tiny_dataset, tiny_features):
    """``l2i train-classifier --trainer.epochs 0``: the published pair becomes classifier.ckpt."""
    from l2i.config import ClassifierRecipe, DataConfig, TrainerConfig
    from l2i.data import load_dataset
    from l2i.models import load_classifier
    from l2i.training.classifier import train_classifier

    data = DataConfig(train_folds=[1, 2], valid_folds=[3], test_folds=[4], duration_s=1.0)
    names = load_dataset(tiny_dataset, data).class_names
    enc, head = SBConv2dEncoderV2(4).eval(), SBClassifier(4, 8, len(names)).eval()
    randomise(enc, 2)
    randomise(head, 3)
    sb = tmp_path / "sb"
    sb.mkdir()
    torch.save(enc.state_dict(), sb / "embedding_model.ckpt")
    torch.save(head.state_dict(), sb / "classifier.ckpt")
    write_label_encoder(sb / "label_encoder.txt", names[::-1])  # SpeechBrain saw them reversed
    cfg = ClassifierRecipe(
        data_folder=str(tiny_dataset), output_folder=str(tmp_path / "clf"),
        features=tiny_features, data=data,
        trainer=TrainerConfig(epochs=0, batch_size=8, device="cpu", progress=False),
        model=ClassifierModelConfig(arch="sb_conv2d", input="log1p_mag", embed_dim=4,
                                    lin_neurons=8, pretrained=str(sb)))
    train_classifier(cfg)
    model, info = load_classifier(tmp_path / "clf" / "classifier.ckpt")
    assert info.class_names == names and isinstance(model, SBConv2dClassifier)
    torch.testing.assert_close(model.classifier.weight, head.weight.detach().flip(0))
    torch.testing.assert_close(model.encoder.resblock.block[4].running_var,
                               enc.resblock.block[4].running_var)
