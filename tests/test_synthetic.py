"""l2i.synthetic: the procedural dataset, its ground truth, determinism, the CLI."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
import soundfile as sf
import torch

from l2i.cli import main
from l2i.config import DataConfig, FeaturesConfig, SynthRecipe
from l2i.data import load_dataset
from l2i.errors import ConfigError, DataError
from l2i.features import stft
from l2i.synthetic import (
    CLASS_NAMES,
    Event,
    event_mask,
    ideal_mask,
    load_events,
    make_clip,
    synthesize_dataset,
)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_layout_and_metadata(tiny_dataset):
    meta = _rows(tiny_dataset / "meta" / "esc50.csv")
    assert list(meta[0]) == ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    assert len(meta) == 32
    for r in meta:
        fold, src, take, target = r["filename"][:-4].split("-")
        assert (fold, src, take, target) == (r["fold"], r["src_file"], r["take"], r["target"])
        assert r["category"] == CLASS_NAMES[int(target)]
        info = sf.info(tiny_dataset / "audio" / r["filename"])
        assert (info.samplerate, info.frames, info.channels) == (8000, 8000, 1)
        assert (tiny_dataset / "events" / r["filename"]).is_file()
    # every class has exactly one clip in each of the 4 folds
    pairs = {(r["target"], r["fold"]) for r in meta}
    assert len(pairs) == 32
    assert (tiny_dataset / "config.yaml").is_file()


def test_events_are_inside_the_clip(tiny_dataset):
    events = load_events(tiny_dataset)
    assert len(events) == 32
    for e in events.values():
        assert 0 <= e.onset_s < e.offset_s <= 1.0
        assert 0.4 - 1e-3 <= e.offset_s - e.onset_s <= 0.8 + 1e-3  # <= 0.8 x clip length
        assert 0 <= e.f_low_hz < e.f_high_hz <= 4000


def test_loader_reads_synth(tiny_dataset):
    index = load_dataset(tiny_dataset, DataConfig(train_folds=[1, 2], valid_folds=[3],
                                                  test_folds=[4]))
    assert index.class_names == CLASS_NAMES[:8]
    assert (len(index.train), len(index.valid), len(index.test)) == (16, 8, 8)


@pytest.mark.parametrize("target", range(len(CLASS_NAMES)))
def test_event_energy_lies_in_its_band_and_span(target):
    """The event alone keeps > 95 % of its STFT energy inside the ground-truth rectangle."""
    feats = FeaturesConfig(sample_rate=16000, n_fft=512)
    x, clean, on, off, lo, hi = make_clip(target, 16000, 2.0, (10, 10),
                                          np.random.default_rng(target))
    assert np.isfinite(x).all() and x.dtype == clean.dtype == np.float32
    power = stft(torch.from_numpy(clean), feats).abs().numpy() ** 2  # (T, F)
    mask = event_mask(Event("x", on, off, lo, hi), feats, power.shape[0])
    assert power[mask].sum() / power.sum() > 0.95
    # outside the event's span the clean track is exactly silent
    n_on, n_off = int(round(on * 16000)), int(round(off * 16000))
    assert not np.any(clean[:n_on]) and not np.any(clean[n_off:])


def test_snr_is_event_power_over_background_power():
    x, clean, on, off, *_ = make_clip(2, 16000, 3.0, (6.0, 6.0), np.random.default_rng(1))
    a, b = int(round(on * 16000)), int(round(off * 16000))
    p_event = np.mean(clean[a:b] ** 2)
    p_noise = np.mean((x - clean) ** 2)
    assert 10 * np.log10(p_event / p_noise) == pytest.approx(6.0, abs=0.05)
    assert np.abs(x).max() == pytest.approx(0.9, abs=1e-5)


def test_event_mask_grid_hand_checked():
    feats = FeaturesConfig(sample_rate=8000, n_fft=256, hop_ms=12.5, win_ms=25.0)  # hop 100
    m = event_mask(Event("x", 0.1, 0.3, 500.0, 1000.0), feats, n_frames=50)
    assert m.shape == (50, 129) and m.dtype == bool
    rows = np.flatnonzero(m.any(1))  # frame t at t * 100 / 8000 s
    assert rows.tolist() == list(range(8, 25))  # 0.1 s -> frame 8, 0.3 s -> frame 24
    cols = np.flatnonzero(m.any(0))  # bin f at f * 31.25 Hz
    assert cols.tolist() == list(range(16, 33))  # 500 Hz -> 16, 1000 Hz -> 32
    assert m.sum() == 17 * 17


def test_ideal_mask_is_inside_rectangle_and_nonempty(tiny_dataset, tiny_features):
    events = load_events(tiny_dataset)
    for name, e in list(events.items())[:8]:
        ibm = ideal_mask(tiny_dataset, name, tiny_features)
        rect = event_mask(e, tiny_features, ibm.shape[0])
        assert ibm.shape == rect.shape
        assert ibm.sum() > 0 and not np.any(ibm & ~rect)


def test_deterministic_for_a_seed(tmp_path):
    def digest(folder):
        h = hashlib.sha1()
        for p in sorted((folder / "audio").iterdir()):
            h.update(p.name.encode() + p.read_bytes())
        h.update((folder / "meta" / "events.csv").read_bytes())
        return h.hexdigest()

    kw = dict(n_per_class=2, n_folds=2, sample_rate=8000, duration_s=1.0, n_classes=3)
    synthesize_dataset(SynthRecipe(output_folder=str(tmp_path / "a"), seed=5, **kw))
    synthesize_dataset(SynthRecipe(output_folder=str(tmp_path / "b"), seed=5, **kw))
    synthesize_dataset(SynthRecipe(output_folder=str(tmp_path / "c"), seed=6, **kw))
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def test_rerun_smaller_removes_stale_clips(tmp_path):
    kw = dict(output_folder=str(tmp_path), n_folds=2, sample_rate=8000, duration_s=1.0,
              n_classes=2)
    synthesize_dataset(SynthRecipe(n_per_class=3, **kw))
    synthesize_dataset(SynthRecipe(n_per_class=1, **kw))
    assert len(list((tmp_path / "audio").iterdir())) == 2
    assert len(list((tmp_path / "events").iterdir())) == 2


def test_bad_recipe_lists_all_problems(tmp_path):
    with pytest.raises(ConfigError, match=r"n_per_class.*n_classes.*snr_db"):
        synthesize_dataset(SynthRecipe(output_folder=str(tmp_path), n_per_class=0,
                                       n_classes=11, snr_db=[10.0, 0.0]))


def test_load_events_errors(tmp_path):
    with pytest.raises(DataError, match="events.csv not found"):
        load_events(tmp_path)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "events.csv").write_text("filename,onset_s\na.wav,0.1\n")
    with pytest.raises(DataError, match="lacks column"):
        load_events(tmp_path)


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["synth", str(out), "--n_per_class", "1", "--seed", "3", "--sample_rate",
                 "8000", "--duration_s", "1"]) == 0
    text = capsys.readouterr().out
    assert "wrote 10 clips" in text and str(out) in text
    assert len(list((out / "audio").glob("*.wav"))) == 10


def test_classes_are_separable_by_band_energy(tmp_path):
    """A nearest-centroid rule on per-band log energy of the event separates most classes:
    a cheap proxy for 'a small CNN can learn them' (which the classifier tests check)."""
    feats = FeaturesConfig(sample_rate=8000, n_fft=256)
    X, y = [], []
    for target in range(len(CLASS_NAMES)):
        for j in range(6):
            x, *_ = make_clip(target, 8000, 1.0, (15, 15), np.random.default_rng([target, j]))
            mag = stft(torch.from_numpy(x), feats).abs().numpy()  # (T, F)
            X.append(np.log1p(mag).max(0))  # (F,)
            y.append(target)
    X, y = np.array(X), np.array(y)
    train, test = np.arange(len(y)) % 6 < 3, np.arange(len(y)) % 6 >= 3
    cents = np.stack([X[train & (y == c)].mean(0) for c in range(len(CLASS_NAMES))])
    pred = np.argmin(((X[test][:, None] - cents[None]) ** 2).sum(-1), 1)
    assert (pred == y[test]).mean() >= 0.7
