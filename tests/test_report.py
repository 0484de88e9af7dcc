from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import sentiment_rows, write_csv
from PIL import Image
from typer.testing import CliRunner

from bertfit import TextClassifier, train
from bertfit.card import ModelCard
from bertfit.cli import app
from bertfit.data import TextDataset
from bertfit.decision import DecisionRule
from bertfit.evaluate import write_report
from bertfit.exceptions import DataError
from bertfit.features import Windowing
from bertfit.report import build_report

SECTIONS = [
    "summary",
    "comparison",
    "config",
    "learning",
    "per-class",
    "confusion",
    "curves",
    "calibration",
    "mistakes",
    "timings",
    "environment",
]


SVG = "{http://www.w3.org/2000/svg}"
CHARTS = ["learning curves", "confusion matrix", "precision-recall and ROC curves", "reliability diagram"]


def _charts(page: str) -> list[ET.Element]:
    """The inline ``<svg>`` charts of a page, parsed (each must be well-formed XML)."""
    return [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", page, re.DOTALL)]


def _texts(chart: ET.Element) -> set[str]:
    return {"".join(text.itertext()) for text in chart.iter(f"{SVG}text")}


def test_every_training_run_leaves_a_self_contained_report(trained_dir):
    page = (trained_dir / "report.html").read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in page
    assert not re.search(r"<script|<link|src=\"(?!data:)", page)  # nothing to fetch, nothing to run
    charts = _charts(page)
    assert [chart.find(f"{SVG}title").text for chart in charts] == CHARTS
    learning, confusion, curves, calibration = map(_texts, charts)
    assert {"Loss", "train loss", "validation loss", "best epoch", "validation macro_f1", "epoch"} <= learning
    assert {"Confusion matrix (counts; colour: share of row)", "neg", "pos", "share of the true class"} <= confusion
    assert {"Precision-recall, positive class 'pos'", "ROC", "chance", "recall", "false positive rate"} <= curves
    assert any(re.fullmatch(r"AP \d\.\d{3}", t) for t in curves) and any(t.startswith("ROC AUC ") for t in curves)
    assert {"Reliability diagram", "calibrated", "Confidences per bin", "count (log scale)"} <= calibration
    assert any(t.startswith("validation, T = 1 (uncalibrated): ECE ") for t in calibration)
    records = [json.loads(line) for line in (trained_dir / "validation_predictions.jsonl").read_text().splitlines()]
    info = json.loads((trained_dir / "bertfit.json").read_text())
    assert len(records) == info["data"]["validation"]["rows"] == 12
    assert set(records[0]) == {"text", "true_label", "label", "score", "prob_neg", "prob_pos"}
    assert info["device"] == "cpu" and info["validation_seconds"] >= 0


def test_the_report_sets_the_model_beside_its_0_5_decisions_and_the_baselines(trained_dir):
    info = json.loads((trained_dir / "bertfit.json").read_text())
    assert list(info["baselines"]) == ["majority_class", "tfidf_logreg", "frozen_embeddings_logreg"]
    metrics = json.loads((trained_dir / "metrics.json").read_text())
    for result in info["baselines"].values():  # the scalar metric keys of fine-tuning, and a time
        assert {k for k, v in metrics.items() if isinstance(v, float)} <= set(result["metrics"])
        assert result["seconds"] >= 0
    assert info["baselines"]["majority_class"]["metrics"]["accuracy"] == 0.5  # 6 'neg' and 6 'pos' texts
    page = (trained_dir / "report.html").read_text()
    section = page[page.index('id="comparison"') : page.index("</section>", page.index('id="comparison"'))]
    rows = re.findall(r"<tr><td[^>]*>([^<]+)</td>", section)
    assert rows == [
        f"fine-tuned model (threshold {info['threshold']:.4f})",
        "fine-tuned model at probability 0.5",
        "majority class (the same label for every text)",
        "TF-IDF + logistic regression",
        "frozen embeddings + logistic regression",
    ]
    assert f"{info['threshold_tuning']['at_0.5']['f1']:.4f}" in section and "F1 of &#x27;pos&#x27;" in section


def test_no_baselines_leaves_the_comparison_to_the_threshold(tiny_config, tmp_path):
    rows = sentiment_rows()
    clf = train(tiny_config(epochs=1, baselines=False), TextDataset([t for t, _ in rows], [lab for _, lab in rows]))
    assert "baselines" not in clf.info_
    page = build_report(clf.card, clf.metrics, clf.validation_predictions_)
    assert "What fine-tuning gained" in page and ">TF-IDF + logistic regression<" not in page  # no baseline rows


def _run(labels, records):
    matrix = [[1] * len(labels) for _ in labels]
    per_class = {label: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2} for label in labels}
    metrics = {"accuracy": 0.5, "macro_f1": 0.5, "mcc": 0.0, "per_class": per_class}
    metrics["confusion_matrix"] = {"labels": labels, "matrix": matrix}
    positive = labels[1] if len(labels) == 2 else None
    return build_report(
        ModelCard(DecisionRule(tuple(labels), positive_label=positive), Windowing(16)), metrics, records
    )


def test_mistakes_are_sorted_by_confidence_and_curves_only_for_binary_tasks():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    records = DecisionRule(("a", "b")).records(["t0", "t1 <b>", "t2", "t3"], ["b", "a", "a", "b"], probs)
    assert [r["label"] for r in records] == ["a", "b", "b", "a"] and records[2]["score"] == 0.8
    page = _run(["a", "b"], records)
    assert 'id="curves"' in page and "4 of 4 texts are misclassified" in page
    order = [page.index(f">{text}<") for text in ("t0", "t2", "t1 &lt;b&gt;", "t3")]
    assert order == sorted(order)  # by the probability of the wrong prediction; escaped
    three = DecisionRule(("a", "b", "c")).records(["x"], ["a"], np.array([[0.2, 0.5, 0.3]]))
    assert 'id="curves"' not in _run(["a", "b", "c"], three)


def test_rebuild_from_saved_predictions_or_on_other_data(trained_dir, sentiment_csv, tmp_path):
    path = write_report(trained_dir, output=tmp_path / "again.html")
    assert 'id="mistakes"' in path.read_text()
    path = write_report(trained_dir, sentiment_csv, output=tmp_path / "other.html")
    assert f"scores on {sentiment_csv}" in path.read_text()
    bad = write_csv(tmp_path / "bad.csv", [("good film", "meh")])
    with pytest.raises(DataError, match=r"labels \['meh'\].*not labels of this model"):
        write_report(trained_dir, bad, output=tmp_path / "x.html")
    bare = tmp_path / "bare"
    shutil.copytree(trained_dir, bare)
    (bare / "validation_predictions.jsonl").unlink()
    with pytest.raises(DataError, match="pass --data"):
        write_report(bare)

    runner = CliRunner()
    result = runner.invoke(app, ["report", str(bare), "--data", str(sentiment_csv), "--quiet"])
    assert result.exit_code == 0 and (bare / "report.html").is_file(), result.output
    result = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 3 and "ModelError" in result.output


def test_a_failing_report_leaves_no_model_directory(tiny_config, monkeypatch, tmp_path):
    import bertfit.save

    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(bertfit.save, "build_report", broken)
    texts, labels = ["good film", "bad film"] * 10, ["pos", "neg"] * 10
    with pytest.raises(RuntimeError, match="plotting failed"):
        train(tiny_config(epochs=1, output_dir=str(tmp_path / "model")), TextDataset(texts, labels))
    assert not (tmp_path / "model").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".model.checkpoint"]  # the training is kept for --resume


def test_fit_then_save_pretrained_writes_the_report_too(tiny_config, tmp_path):
    clf = TextClassifier(config=tiny_config(epochs=1)).fit(["good film", "bad film"] * 10, ["pos", "neg"] * 10)
    clf.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "report.html").is_file()


_NO_MATPLOTLIB = """
import sys
from bertfit.card import read_model_files
from bertfit.report import build_report
files = read_model_files(sys.argv[1])
assert build_report(files.card, files.metrics, files.records).count("<svg ") == 4
print("matplotlib" in sys.modules)
"""


def test_building_the_report_imports_no_matplotlib(trained_dir):
    # In a fresh interpreter: this test session may have imported matplotlib already (the explore tests).
    result = subprocess.run([sys.executable, "-c", _NO_MATPLOTLIB, str(trained_dir)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


_CHECK = """<script>window.addEventListener("load", () => {
  const out = document.createElement("pre"); out.id = "page-check";
  out.textContent = JSON.stringify({
    charts: [...document.querySelectorAll("svg")].map((s) => s.getBoundingClientRect().width),
    sections: [...document.querySelectorAll("section, header")].map((s) => s.id),
    height: document.body.scrollHeight});
  document.body.appendChild(out);});</script>"""


def _chromium(*args: str, tmp_path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    flags += [f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run(["chromium", *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium: run `make chromium`")
def test_report_renders_in_headless_chromium(trained_dir, tmp_path):
    page = tmp_path / "report.html"
    shutil.copy(trained_dir / "report.html", page)
    checked = tmp_path / "checked.html"
    checked.write_text(page.read_text().replace("</body>", _CHECK + "</body>"))

    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", checked.as_uri(), tmp_path=tmp_path)
    found = json.loads(re.search(r'<pre id="page-check">(.*?)</pre>', dom.stdout).group(1).replace("&quot;", '"'))
    assert found["sections"] == SECTIONS
    assert len(found["charts"]) == 4 and all(width > 0 for width in found["charts"])  # all laid out

    shot = tmp_path / "shot.png"
    result = _chromium(
        "--window-size=1200,2000", "--hide-scrollbars", f"--screenshot={shot}", page.as_uri(), tmp_path=tmp_path
    )
    console = [line for line in (dom.stderr + result.stderr).splitlines() if ":CONSOLE" in line]
    assert console == []
    with Image.open(shot) as image:
        assert image.size == (1200, 2000)
        gray = np.asarray(image.convert("L"), dtype=np.float32)
    assert gray.std() > 10 and (gray < 128).mean() > 0.01  # text and plots, not a blank page
