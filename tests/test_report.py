"""``l2i report``: a self-contained HTML page, checked as text and in a real headless browser."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from l2i.config import ReportRecipe
from l2i.errors import L2IError
from l2i.report import find_evaluations, find_examples, write_report

CLASSES = ["chirp", "hum", "click"]
METRICS = {"AI": 37.5, "AD": 12.25, "AG": 3.5, "FF": 0.125, "Fid-In": 0.875, "SPS": 0.4,
           "COMP": 9.33, "AD_sb": 0.01, "fidelity_top1": 75.0, "fidelity_top3": 100.0,
           "fidelity_top5": None, "accuracy": 62.5,
           "component_removal": {"drop_relevant": 0.2, "drop_random": 0.05},
           "localisation": {"l2i_mask": {"auc": 0.91, "iou": 0.4},
                            "input_energy": {"auc": 0.8, "iou": 0.1},
                            "n_clips_with_events": 8}}


def _png(path: Path, seed: int = 0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(path, np.random.default_rng(seed).random((24, 40)), cmap="magma")


def _wav(path: Path, hz: float) -> None:
    t = np.arange(4000) / 8000.0
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 8000)


def _fake_run(root: Path, n_examples: int = 2) -> Path:
    """A demo-like run folder: eval/ (metrics + examples) and classifier/, nmf/, l2i/."""
    ev = root / "eval"
    ex = ev / "examples"
    ex.mkdir(parents=True)
    (ev / "metrics.json").write_text(json.dumps({
        "kind": "l2i-evaluate", "version": 1, "metrics": METRICS,
        "counts": {"n_clips": 8, "mean_selected": 3.5},
        "settings": {"ckpt": "runs/l2i/l2i.ckpt", "data_folder": "data/synth",
                     "test_folds": [4], "contamination": "mixtures", "relevance_th": 0.2,
                     "class_names": CLASSES}}))
    for i in range(n_examples):
        name = f"4-10{i}-A-{i}"
        _wav(ex / f"{name}.input.wav", 300 + 100 * i)
        _wav(ex / f"{name}.explanation.wav", 300 + 100 * i)
        _png(ex / f"{name}.png", i)
        (ex / f"{name}.json").write_text(json.dumps({
            "predicted_name": CLASSES[i % 3], "target_name": CLASSES[i % 3],
            "label_name": CLASSES[i % 3], "p": 0.9, "o": 0.8, "q": 0.1,
            "theta_probs": {"chirp": 0.7, "hum": 0.2, "click": 0.1},
            "classifier_probs": {"chirp": 0.9, "hum": 0.05, "click": 0.05},
            "selected_components": [4, 1], "relevance": [0.0, 0.5, 0.0, 0.0, 1.0]}))
    clf = root / "classifier"
    clf.mkdir()
    (clf / "metrics.json").write_text(json.dumps({"test_accuracy": 81.25, "epochs": 3}))
    _png(clf / "confusion.png", 7)
    nmf = root / "nmf"
    nmf.mkdir()
    (nmf / "stats.json").write_text(json.dumps({"rel_error": 0.123}))
    _png(nmf / "atoms.png", 8)
    (root / "l2i").mkdir()
    return root


def _srcs(page: str, tag: str) -> list[str]:
    return re.findall(rf"<{tag}\b[^>]*\bsrc='([^']*)'", page)


# --------------------------------------------------------------------------- HTML content
def test_report_is_self_contained_with_audio_images_and_numbers(tmp_path):
    root = _fake_run(tmp_path / "run")
    out = write_report(ReportRecipe(run_folder=str(root)))
    assert out == str(root / "report.html")
    page = Path(out).read_text()
    # nothing is fetched from anywhere: no http(s) resources, no external script/css/link
    assert not re.search(r"""(src|href)\s*=\s*['"]?\s*(https?:|//)""", page, re.I)
    assert "<link" not in page and not re.search(r"<script[^>]*\bsrc=", page)
    audios, imgs = _srcs(page, "audio"), _srcs(page, "img")
    assert len(audios) == 4 and all(a.startswith("data:audio/wav;base64,") for a in audios)
    assert len(imgs) == 4 and all(i.startswith("data:image/png;base64,") for i in imgs)
    wav = root / "eval" / "examples" / "4-100-A-0.input.wav"
    assert base64.b64decode(audios[0].split(",", 1)[1]) == wav.read_bytes()
    # metrics table (ours + the reference's rows), fidelity, removal, localisation, sub-runs
    assert "<td>37.50</td>" in page and "<td>12.25</td>" in page and "<td>0.88</td>" in page
    assert "6.75" in page and "61.62" in page
    assert "<td>75.00</td>" in page and "mixtures" in page and "drop_relevant" in page
    assert "l2i_mask" in page and "0.91" in page
    assert "test_accuracy" in page and "81.25" in page and "rel_error" in page
    assert "confusion.png" in page and "atoms.png" in page
    assert "chirp" in page and "4 (1.00), 1 (0.50)" in page  # selected components + relevance
    assert 'data-loaded=' in page


def test_report_folds_components_of_negligible_relevance(tmp_path):
    root = _fake_run(tmp_path / "run", n_examples=1)
    ex = root / "eval" / "examples"
    info = json.loads((ex / "4-100-A-0.json").read_text())
    (ex / "4-100-A-0.components").mkdir()
    comps = []
    for k, r in ((4, 1.0), (1, 0.5), (2, 0.004), (3, 0.0001)):
        _wav(ex / "4-100-A-0.components" / f"k{k}.wav", 200 + k)
        comps.append({"k": k, "relevance": r, "wav": f"4-100-A-0.components/k{k}.wav"})
    info.update(selected_components=[4, 1, 2, 3], relevance=[0.0, 0.5, 0.004, 0.0001, 1.0],
                components=comps)
    (ex / "4-100-A-0.json").write_text(json.dumps(info))
    page = Path(write_report(ReportRecipe(run_folder=str(root)))).read_text()
    # soft weights select every r > 0: the page names and plays those with r >= 0.01 only
    assert "4 (1.00), 1 (0.50) and 2 more with relevance &lt; 0.01" in page
    assert "<b>k=4</b>" in page and "<b>k=1</b>" in page
    assert "<b>k=2</b>" not in page and "<b>k=3</b>" not in page
    assert "selected NMF components (4," in page


def test_report_n_examples_and_output_path(tmp_path):
    root = _fake_run(tmp_path / "run", n_examples=3)
    out = tmp_path / "elsewhere" / "r.html"
    assert write_report(ReportRecipe(run_folder=str(root), n_examples=1,
                                     output=str(out))) == str(out)
    page = out.read_text()
    assert len(_srcs(page, "audio")) == 2 and page.count("class='card'>") == 1 + 3
    assert not (root / "report.html").exists()


def test_report_on_a_plain_evaluate_folder(tmp_path):
    root = _fake_run(tmp_path / "run")
    _wav(root / "eval" / "examples" / "4-101-A-1.clean.wav", 200)  # a contaminated set
    page = Path(write_report(ReportRecipe(run_folder=str(root / "eval")))).read_text()
    assert "37.50" in page and len(_srcs(page, "audio")) == 5
    assert "before contamination" in page
    assert "Training runs" not in page


def test_find_evaluations_ignores_other_metrics_files(tmp_path):
    root = _fake_run(tmp_path / "run")
    deep = root / "more" / "eval_noise"
    deep.mkdir(parents=True)
    (deep / "metrics.json").write_text(json.dumps({"kind": "l2i-evaluate", "metrics": {}}))
    (root / "more" / "bad").mkdir()
    (root / "more" / "bad" / "metrics.json").write_text("{not json")
    assert find_evaluations(root) == [root / "eval", deep]
    assert find_examples(root / "eval" / "examples") == ["4-100-A-0", "4-101-A-1"]
    assert find_examples(root / "nope") == []


def test_report_errors(tmp_path):
    with pytest.raises(L2IError, match="does not exist"):
        write_report(ReportRecipe(run_folder=str(tmp_path / "missing")))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.json").write_text(json.dumps({"accuracy": 0.5}))  # not an evaluation
    with pytest.raises(L2IError, match="nothing to report"):
        write_report(ReportRecipe(run_folder=str(empty)))
    assert not (empty / "report.html").exists()


# --------------------------------------------------------------------------- real browser
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def _chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (as root); else skip, visibly."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("chromium is not installed and cannot be installed here (needs root and "
                    "apt-get): apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "install", "-y", "chromium"], env=env, check=True,
                       capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as err:
        pytest.skip(f"chromium is missing and 'apt-get install -y chromium' failed: {err}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("chromium is missing after 'apt-get install -y chromium'")
    return found


def test_report_loads_in_headless_chromium(tmp_path):
    chromium = _chromium()
    root = _fake_run(tmp_path / "run")
    page = Path(write_report(ReportRecipe(run_folder=str(root))))
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*data-loaded=\"([^\"]*)\"", proc.stdout)
    assert body, f"no <body data-loaded> in chromium's DOM dump: {proc.stderr[-2000:]}"
    # every image decoded (naturalWidth > 0), every player read its metadata
    assert body.group(1) == "img=4/4 audio=4/4"


def test_report_overview_lists_clean_evaluation_first(tmp_path):
    root = _fake_run(tmp_path / "run")
    clean = root / "z_clean"
    clean.mkdir()
    (clean / "metrics.json").write_text(json.dumps({
        "kind": "l2i-evaluate", "metrics": {"AI": 11.0}, "settings": {"contamination": "none"}}))
    page = Path(write_report(ReportRecipe(run_folder=str(root)))).read_text()
    assert "<h2>Overview</h2>" in page
    overview = page.split("<h2>Overview</h2>", 1)[1].split("</table>", 1)[0]
    assert overview.index("z_clean") < overview.index("mixtures")
    assert page.index("Evaluation <code>z_clean</code>") < page.index("Evaluation <code>eval")


def test_report_escapes_every_value_from_the_run_folder(tmp_path):
    """Texts read from json files (class names, paths, explainer names) are HTML-escaped."""
    root = _fake_run(tmp_path / "run")
    ev = root / "eval"
    data = json.loads((ev / "metrics.json").read_text())
    data["settings"]["class_names"] = ["<script>alert(1)</script>", "a'b", 'c"d']
    data["explainers"] = {"<img src=x onerror=alert(2)>": {"AI": 1.0}}
    (ev / "metrics.json").write_text(json.dumps(data))
    info = json.loads((ev / "examples" / "4-100-A-0.json").read_text())
    info["file"] = "x' onmouseover='alert(3)"
    (ev / "examples" / "4-100-A-0.json").write_text(json.dumps(info))
    page = Path(write_report(ReportRecipe(run_folder=str(root)))).read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "x' onmouseover" not in page and "x&#39; onmouseover=&#39;alert(3)" in page
    assert page.count("<script>") == 1  # only the page's own loader script


def test_selection_text_names_the_mask_options_that_differ_from_the_paper():
    from l2i.report import _selection_text

    assert _selection_text({"relevance_th": 0.2}) == "relevance > 0.2"
    assert _selection_text({"top_k": 3}) == "top 3 components"
    soft = {"relevance_th": 0.05, "explainer_settings": {"l2i": {"mask": {
        "resolution": "clip", "weights": "soft", "power": 1.0, "rescale": True,
        "sharpen": 0.5, "binarize": 0.0}}}}
    assert _selection_text(soft) == "soft weights max(r, 0); mask: rescale True, sharpen 0.5"
    frame = {"relevance_th": 0.05, "explainer_settings": {"l2i": {"mask": {
        "resolution": "frame", "weights": "threshold"}}}}
    assert _selection_text(frame) == "relevance > 0.05; mask: resolution frame"
