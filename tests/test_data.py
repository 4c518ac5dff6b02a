"""l2i.data: the three layouts, the all-problems dataset check, the audio cache, WaveDataset."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import l2i.data as data_mod
from l2i.config import DataConfig
from l2i.data import WaveDataset, load_dataset, load_split
from l2i.errors import ConfigError, DataError

ESC10 = Path("/work/shared/data/esc10")
SR = 8000


def _wav(path: Path, secs: float = 0.25, freq: float = 440.0, sr: int = SR) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(secs * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)


def _esc(root: Path, rows: list[tuple], header: str = "filename,fold,target,category,esc10",
         make_audio: bool = True) -> Path:
    """rows: (filename, fold, target, category, esc10)."""
    (root / "meta").mkdir(parents=True, exist_ok=True)
    lines = [header] + [",".join(str(v) for v in r) for r in rows]
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    if make_audio:
        for r in rows:
            _wav(root / "audio" / str(r[0]), freq=200.0 + 50 * int(r[2]))
    return root


def _cfg(**kw) -> DataConfig:
    base = dict(train_folds=[1], valid_folds=[2], test_folds=[3], duration_s=0.5)
    base.update(kw)
    return DataConfig(**base)


def _three_class(root: Path) -> Path:
    rows = []
    for fold in (1, 2, 3):
        for target, cat, esc10 in ((41, "chainsaw", True), (0, "dog", True), (12, "fire", False)):
            rows.append((f"{fold}-{target}-A-{target}.wav", fold, target, cat, esc10))
    return _esc(root, rows)


# --------------------------------------------------------------------------- ESC-50 layout
def test_esc50_labels_follow_target_order(tmp_path):
    index = load_dataset(_three_class(tmp_path), _cfg())
    assert index.class_names == ["dog", "fire", "chainsaw"]  # targets 0, 12, 41
    assert [c.label for c in index.train] == [2, 0, 1]  # CSV order kept
    assert [c.id for c in index.train][:1] == ["1-41-A-41.wav"]
    assert (len(index.train), len(index.valid), len(index.test)) == (3, 3, 3)
    assert all(c.fold == 3 for c in index.test)
    assert "3 classes, 3 train / 3 valid / 3 test" in index.summary()


def test_esc10_filter(tmp_path):
    index = load_dataset(_three_class(tmp_path), _cfg(esc10=True))
    assert index.class_names == ["dog", "chainsaw"]
    assert len(index.train) == 2 and {c.label for c in index.train} == {0, 1}


def test_missing_meta(tmp_path):
    with pytest.raises(DataError, match=r"meta/esc50\.csv not found"):
        load_dataset(tmp_path, _cfg())


def test_missing_data_folder(tmp_path):
    with pytest.raises(DataError, match="data folder .*not found.*--data_folder"):
        load_dataset(tmp_path / "nope", _cfg())


def test_missing_columns(tmp_path):
    _esc(tmp_path, [("a.wav", 1, 0)], header="filename,fold,target", make_audio=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['category'\]"):
        load_dataset(tmp_path, _cfg())
    _esc(tmp_path, [("a.wav", 1, 0, "dog")], header="filename,fold,target,category")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['esc10'\]"):
        load_dataset(tmp_path, _cfg(esc10=True))


def test_all_problems_reported_at_once(tmp_path):
    rows = [("1-a-A-0.wav", 1, 0, "dog", True),
            ("1-a-A-0.wav", 1, 0, "dog", True),  # duplicate
            ("2-b-A-1.wav", 2, 1, "cat", True),  # class absent from train (fold 1)
            ("3-c-A-0.wav", "x", 0, "dog", True),  # bad fold
            ("3-d-A-2.wav", 3, -2, "cow", True),  # bad target
            ("3-e-A-0.wav", 3, 0, "wolf", True),  # category clash for target 0
            ("3-f-A-0.wav", 3, 0, "dog", True)]
    _esc(tmp_path, rows, make_audio=False)
    _wav(tmp_path / "audio" / "1-a-A-0.wav")  # the others are missing
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path, _cfg(test_folds=[3, 7]))
    msg = str(err.value)
    for expected in ("line 3: 1-a-A-0.wav is listed twice -> remove", "line 5: filename=",
                     "fold='x'", "line 6: filename='3-d-A-2.wav' fold='3' target='-2'",
                     "line 7: target 0 is 'wolf' here but 'dog'",
                     "2-b-A-1.wav not found", "3-e-A-0.wav not found", "3-f-A-0.wav not found",
                     "test fold(s) [7] hold no clips",
                     "class 'cat' has no clip in the training split"):
        assert expected in msg, expected
    # one entry per row/file: 3 bad rows, 1 duplicate, 3 missing files, fold 7, class cat
    assert "has 9 problem(s)" in msg and msg.count("\n  - ") == 9


def test_empty_split_and_unknown_fold(tmp_path):
    _three_class(tmp_path)
    with pytest.raises(DataError, match=r"valid fold\(s\) \[5\] hold no clips .*"
                                        r"set --data.valid_folds"):
        load_dataset(tmp_path, _cfg(valid_folds=[5]))


def test_overlapping_folds(tmp_path):
    _three_class(tmp_path)
    with pytest.raises(DataError, match=r"\[1\] are in both train_folds and test_folds"):
        load_dataset(tmp_path, _cfg(test_folds=[1, 3]))


def test_bad_config_values(tmp_path):
    _three_class(tmp_path)
    with pytest.raises(ConfigError, match="data.format.*data.crop"):
        load_dataset(tmp_path, _cfg(format="json", crop="left"))


# --------------------------------------------------------------------------- CSV manifest
def test_manifest_with_folds_paths_relative_to_csv(tmp_path):
    for name in ("x1", "x2", "x3"):
        _wav(tmp_path / "lists" / "wav" / f"{name}.flac")
    manifest = tmp_path / "lists" / "m.csv"
    cfg = DataConfig(format="csv", manifest="lists/m.csv", train_folds=[1], valid_folds=[2],
                     test_folds=[])
    manifest.write_text("path,label,fold\nwav/x1.flac,bird,1\nwav/x2.flac,airplane,1\n"
                        "wav/x3.flac,bird,2\nwav/x1.flac,airplane,2\n")
    with pytest.raises(DataError, match=r"m\.csv line 5: wav/x1\.flac is listed twice"):
        load_dataset(tmp_path, cfg)
    manifest.write_text("path,label,fold\nwav/x1.flac,bird,1\nwav/x2.flac,airplane,1\n"
                        "wav/x3.flac,bird,2\n")
    index = load_dataset(tmp_path, cfg)
    assert index.class_names == ["airplane", "bird"]
    assert [(c.id, c.label) for c in index.train] == [("lists/wav/x1.flac", 1),
                                                      ("lists/wav/x2.flac", 0)]
    assert [c.id for c in index.valid] == ["lists/wav/x3.flac"] and index.test == []


def test_manifest_without_folds_uses_hash_folds(tmp_path):
    lines = ["path,label"]
    for i in range(40):
        _wav(tmp_path / f"c{i}.wav", secs=0.05)
        lines.append(f"c{i}.wav,{i % 2 * 10}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    cfg = DataConfig(format="csv", manifest="m.csv")  # folds 1,2,3 / 4 / 5
    a = load_dataset(tmp_path, cfg)
    b = load_dataset(tmp_path, cfg)
    assert [c.id for c in a.test] == [c.id for c in b.test]  # deterministic
    assert len(a.train) + len(a.valid) + len(a.test) == 40
    assert a.class_names == ["0", "10"]  # integer labels sorted numerically
    assert all(c.fold == data_mod._hash_fold(c.id) for c in a.train)


def test_manifest_errors(tmp_path):
    with pytest.raises(DataError, match="manifest is not set"):
        load_dataset(tmp_path, DataConfig(format="csv"))
    with pytest.raises(DataError, match=r"manifest .*nope\.csv not found"):
        load_dataset(tmp_path, DataConfig(format="csv", manifest="nope.csv"))
    (tmp_path / "m.csv").write_text("file,label\na.wav,x\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['path'\]"):
        load_dataset(tmp_path, DataConfig(format="csv", manifest="m.csv"))
    (tmp_path / "m.csv").write_text("path,label,fold\na.wav,,1\nb.wav,y,one\n")
    with pytest.raises(DataError, match=r"(?s)2 problem.*line 2: path='a.wav' label=''.*"
                                        r"line 3: .*fold='one'"):
        load_dataset(tmp_path, DataConfig(format="csv", manifest="m.csv"))


# --------------------------------------------------------------------------- folders
def test_folder_per_class(tmp_path):
    for cls in ("rain", "dog"):
        for i in range(12):
            _wav(tmp_path / cls / ("sub" if i % 2 else "") / f"{i}.wav", secs=0.05)
    (tmp_path / "dog" / "notes.txt").write_text("not audio")
    index = load_dataset(tmp_path, DataConfig(format="folders"))  # hash folds 1-3 / 4 / 5
    assert index.class_names == ["dog", "rain"]
    total = len(index.train) + len(index.valid) + len(index.test)
    assert total == 24
    assert all(c.id.split("/")[0] == index.class_names[c.label] for c in index.train)


def test_folders_errors(tmp_path):
    with pytest.raises(DataError, match="has no sub-folders"):
        load_dataset(tmp_path, DataConfig(format="folders"))
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match=r"class folder empty_class/ holds no audio file"):
        load_dataset(tmp_path, DataConfig(format="folders"))


# --------------------------------------------------------------------------- load_split + cache
def test_load_split_shapes_and_cache_reuse(tmp_path, monkeypatch):
    root = _three_class(tmp_path / "d")
    cfg = _cfg()
    index = load_dataset(root, cfg)
    cache = tmp_path / "cache"
    arr = load_split(index, "train", cfg, 16000, cache, progress=False)
    assert isinstance(arr.wavs, np.memmap) and arr.wavs.shape == (3, 8000)
    assert arr.labels.tolist() == [2, 0, 1] and arr.ids == [c.id for c in index.train]
    assert np.abs(arr.wavs[0]).max() == pytest.approx(1.0, abs=1e-3)  # peak normalised
    assert np.all(arr.wavs[:, 4100:] == 0)  # 0.25 s file zero-padded to 0.5 s
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].startswith("train-") and files[0].endswith(".npy")

    def boom(*a, **k):
        raise AssertionError("decoded twice")

    monkeypatch.setattr(data_mod, "load_audio", boom)
    again = load_split(index, "train", cfg, 16000, cache, progress=False)
    np.testing.assert_array_equal(again.wavs, arr.wavs)


def test_cache_invalidated_by_file_and_setting_changes(tmp_path):
    root = _three_class(tmp_path / "d")
    cfg = _cfg()
    cache = tmp_path / "cache"
    first = np.array(load_split(load_dataset(root, cfg), "train", cfg, 8000, cache,
                                progress=False).wavs)
    target = root / "audio" / "1-0-A-0.wav"
    _wav(target, freq=1234.0, secs=0.3)  # changed content and size
    os.utime(target, ns=(1, 1))
    second = load_split(load_dataset(root, cfg), "train", cfg, 8000, cache, progress=False)
    assert not np.array_equal(first[1], second.wavs[1])
    np.testing.assert_array_equal(first[0], second.wavs[0])
    assert len(list(cache.iterdir())) == 1  # the stale cache was removed
    longer = _cfg(duration_s=0.75)
    third = load_split(load_dataset(root, longer), "train", longer, 8000, cache, progress=False)
    assert third.wavs.shape == (3, 6000)
    assert len(list(cache.glob("*.tmp"))) == 0


def test_cache_disabled_and_random_crop_cached_as_center(tmp_path):
    root = tmp_path / "d"
    _esc(root, [("1-a-A-0.wav", 1, 0, "x", True), ("2-a-A-0.wav", 2, 0, "x", True),
                ("3-a-A-0.wav", 3, 0, "x", True)])
    x = np.linspace(-1, 1, 800, dtype=np.float32)
    sf.write(root / "audio" / "1-a-A-0.wav", x, SR, subtype="FLOAT")
    cfg = _cfg(duration_s=0.05, crop="random", normalize="none", cache=False)
    with pytest.warns(UserWarning, match="crop random: this stage reads the centre window"):
        arr = load_split(load_dataset(root, cfg), "train", cfg, SR, tmp_path / "c",
                         progress=False)
    assert type(arr.wavs) is np.ndarray and not (tmp_path / "c").exists()
    np.testing.assert_allclose(arr.wavs[0], x[200:600], atol=1e-6)  # center crop


def test_variable_length_clips(tmp_path):
    root = tmp_path / "d"
    rows = [("1-a-A-0.wav", 1, 0, "x", True), ("1-b-A-0.wav", 1, 0, "x", True),
            ("2-a-A-0.wav", 2, 0, "x", True), ("3-a-A-0.wav", 3, 0, "x", True)]
    _esc(root, rows)
    _wav(root / "audio" / "1-b-A-0.wav", secs=0.5)
    cfg = _cfg(duration_s=None)
    index = load_dataset(root, cfg)
    arr = load_split(index, "train", cfg, 16000, tmp_path / "c", progress=False)
    assert [w.shape for w in arr.wavs] == [(4000,), (8000,)]
    again = load_split(index, "train", cfg, 16000, tmp_path / "c", progress=False)
    np.testing.assert_array_equal(again.wavs[1], arr.wavs[1])
    ds = WaveDataset(again)
    assert ds[1][0].shape == (8000,)


def test_decode_errors_listed_together(tmp_path):
    root = _three_class(tmp_path / "d")
    (root / "audio" / "1-0-A-0.wav").write_bytes(b"")
    (root / "audio" / "1-12-A-12.wav").write_bytes(b"garbage" * 20)
    cfg = _cfg()
    index = load_dataset(root, cfg, check_files=False)  # load_split checks on its own too
    with pytest.raises(DataError, match=r"2 clip\(s\) of the train split cannot be used") as err:
        load_split(index, "train", cfg, SR, tmp_path / "c", progress=False)
    assert "is empty" in str(err.value) and "cannot decode" in str(err.value)
    assert not list((tmp_path / "c").glob("*.npy"))  # nothing half-written kept


def test_silent_clip_warns_during_split(tmp_path):
    root = _three_class(tmp_path / "d")
    sf.write(root / "audio" / "1-0-A-0.wav", np.zeros(500, np.float32), SR)
    cfg = _cfg()
    with pytest.warns(UserWarning, match="1-0-A-0.wav is silent"):
        load_split(load_dataset(root, cfg), "train", cfg, SR, None, workers=1, progress=False)


def test_wave_dataset_and_loader(tiny_dataset, tiny_data_config, tmp_path):
    index = load_dataset(tiny_dataset, tiny_data_config)
    arr = load_split(index, "valid", tiny_data_config, 8000, tmp_path / "c", progress=False)
    ds = WaveDataset(arr)
    wav, label, i = ds[3]
    assert wav.dtype == torch.float32 and wav.shape == (8000,) and (label, i) == (3, 3)
    wav[:] = 0  # items are copies: the (read-only) cache is untouched
    assert np.any(arr.wavs[3])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert batch[0].shape == (8, 8000) and batch[1].tolist() == list(range(8))


@pytest.mark.skipif(not ESC10.exists(), reason="ESC-10 data not present")
def test_esc10_round_trip(tmp_path):
    cfg = DataConfig(train_folds=[1, 2], valid_folds=[3], test_folds=[4], esc10=True)
    index = load_dataset(ESC10, cfg)
    assert index.n_classes == 10
    assert (len(index.train), len(index.valid), len(index.test)) == (160, 80, 80)
    assert index.class_names[0] == "dog" and index.class_names[-1] == "chainsaw"
    small = index.__class__(index.class_names, index.train[:4], index.valid[:4],
                            index.test[:4], index.root)
    arr = load_split(small, "test", cfg, 16000, tmp_path / "c", progress=False)
    assert arr.wavs.shape == (4, 80000)
    shutil.rmtree(tmp_path / "c")


# --------------------------------------------------------------------------- one-pass check
def _broken(root: Path) -> Path:
    """_three_class with one missing, one truncated, one NaN and one corrupt file."""
    _three_class(root)
    audio = root / "audio"
    (audio / "1-0-A-0.wav").unlink()  # train: missing
    x = np.full(4000, 0.1, np.float32)
    sf.write(audio / "2-0-A-0.wav", x, SR, subtype="PCM_16")
    data = (audio / "2-0-A-0.wav").read_bytes()
    (audio / "2-0-A-0.wav").write_bytes(data[:len(data) // 2])  # valid: truncated wav
    x[7] = np.nan
    sf.write(audio / "3-12-A-12.wav", x, SR, subtype="FLOAT")  # test: NaN sample
    (audio / "3-41-A-41.wav").write_bytes(b"RIFF" + bytes(200))  # test: corrupt
    return root


def test_missing_truncated_nan_corrupt_in_one_error(tmp_path):
    root = _broken(tmp_path / "d")
    cfg = _cfg()
    with pytest.raises(DataError) as err:
        load_dataset(root, cfg, sample_rate=SR, cache_dir=tmp_path / "c")
    msg = str(err.value)
    assert "has 4 problem(s), all found in one pass" in msg
    for expected in (r"1-0-A-0\.wav not found", r"2-0-A-0\.wav is truncated",
                     r"3-12-A-12\.wav contains NaN", r"cannot decode audio file \S*3-41-A-41"):
        assert re.search(expected, msg), expected
    assert not list((tmp_path / "c").glob("**/*.tmp"))


def test_nan_found_by_the_up_front_decode_only(tmp_path):
    root = _three_class(tmp_path / "d")
    x = np.full(800, 0.1, np.float32)
    x[3] = np.nan
    sf.write(root / "audio" / "2-0-A-0.wav", x, SR, subtype="FLOAT")
    load_dataset(root, _cfg())  # headers only: a NaN needs decoding
    with pytest.raises(DataError, match=r"2-0-A-0\.wav contains NaN"):
        load_dataset(root, _cfg(), sample_rate=SR)


def test_long_problem_list_is_capped_with_a_count(tmp_path):
    rows = [(f"{f}-{i}-A-0.wav", f, 0, "dog", True) for f in (1, 2, 3) for i in range(12)]
    _esc(tmp_path, rows, make_audio=False)
    _wav(tmp_path / "audio" / "1-0-A-0.wav")
    rows.append(("3-x-A-0.wav", "three", 0, "dog", True))
    _esc(tmp_path, rows, make_audio=False)
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path, _cfg())
    msg = str(err.value)
    assert "has 36 problem(s)" in msg and msg.count("\n  - ") == data_mod.MAX_LISTED
    assert msg.rstrip().endswith("... and 16 more (16 missing audio file)")
    assert msg.index("fold='three'") < msg.index("not found")  # rows before files


def test_unknown_labels_and_empty_category_listed(tmp_path):
    rows = [(f"{f}-{t}-A-{t}.wav", f, t, c, True)
            for f in (1, 2, 3) for t, c in ((0, "dog"), (1, "cat"))]
    _esc(tmp_path, rows + [("3-9-A-9.wav", 3, 9, "", True)])
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path, _cfg(), splits=("test",), known_classes=["dog", "rooster"])
    msg = str(err.value)
    assert "has 2 problem(s)" in msg
    assert "line 8: filename='3-9-A-9.wav' fold='3' target='9' category=''" in msg
    assert "3-1-A-1.wav: label 'cat' is not a class of the model (it knows dog, rooster)" in msg
    assert "1-1-A-1.wav" not in msg  # only the split being read must match the model


def test_up_front_decode_fills_the_cache_each_file_decoded_once(tmp_path, monkeypatch):
    root = _three_class(tmp_path / "d")
    cfg, cache = _cfg(), tmp_path / "c"
    calls = []
    real = data_mod.load_audio
    monkeypatch.setattr(data_mod, "load_audio", lambda p, *a, **k: calls.append(p) or
                        real(p, *a, **k))
    index = load_dataset(root, cfg, sample_rate=SR, cache_dir=cache)
    splits = {s: load_split(index, s, cfg, SR, cache, progress=False) for s in data_mod.SPLITS}
    assert sorted(calls) == sorted(c.path for s in data_mod.SPLITS for c in index.split(s))
    assert splits["train"].wavs.shape == (3, 4000)
    calls.clear()
    again = load_dataset(root, cfg, sample_rate=SR, cache_dir=cache)  # cache hit: no decode
    np.testing.assert_array_equal(load_split(again, "valid", cfg, SR, cache).wavs,
                                  splits["valid"].wavs)
    assert calls == []
    memory = load_dataset(root, cfg, sample_rate=SR, splits=("test",))  # no cache dir
    assert len(calls) == 3 and load_split(memory, "test", cfg, SR, None) is \
        load_split(memory, "test", cfg, SR, None)
    assert len(calls) == 3


@pytest.mark.skipif(not ESC10.exists(), reason="ESC-10 data not present")
def test_esc10_passes_the_full_check(tmp_path):
    cfg = DataConfig(train_folds=[1, 2], valid_folds=[3], test_folds=[4], esc10=True)
    index = load_dataset(ESC10, cfg)  # every row and every header (the decode is benchmarked)
    assert len(index.train) + len(index.valid) + len(index.test) == 320


# --------------------------------------------------------------------------- crop: random
def test_random_crop_changes_every_epoch_and_follows_the_seed(tmp_path):
    root = tmp_path / "d"
    _esc(root, [("1-a-A-0.wav", 1, 0, "x", True), ("1-b-A-0.wav", 1, 0, "x", True),
                ("2-a-A-0.wav", 2, 0, "x", True), ("3-a-A-0.wav", 3, 0, "x", True)])
    ramp = np.linspace(0.01, 1, 8000, dtype=np.float32)  # 1 s: every window is different
    for name in ("1-a-A-0.wav", "1-b-A-0.wav", "2-a-A-0.wav"):
        sf.write(root / "audio" / name, ramp, SR, subtype="FLOAT")
    cfg = _cfg(duration_s=0.25, crop="random", normalize="none")
    index = load_dataset(root, cfg, sample_rate=SR, cache_dir=tmp_path / "c",
                         random_crop=True)
    train = load_split(index, "train", cfg, SR, tmp_path / "c", random_crop=True)
    loader = torch.utils.data.DataLoader(WaveDataset(train), batch_size=2)

    def epochs(seed: int) -> list[np.ndarray]:
        torch.manual_seed(seed)
        return [next(iter(loader))[0].numpy() for _ in range(2)]

    first, second = epochs(0)
    assert first.shape == (2, 2000) and not np.array_equal(first, second)
    for wav in first:  # each item is a true window of the clip
        start = int(np.argmin(np.abs(ramp - wav[0])))
        np.testing.assert_allclose(wav, ramp[start:start + 2000], atol=1e-6)
    np.testing.assert_array_equal(epochs(0)[0], first)  # same seed, same crops
    valid = load_split(index, "valid", cfg, SR, tmp_path / "c")
    np.testing.assert_allclose(valid.wavs[0], ramp[3000:5000], atol=1e-6)  # centre
