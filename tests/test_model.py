from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from bertfit import ModelError, NotFittedError, OutputExistsError, TextClassifier
from bertfit.backbone import default_model_path
from bertfit.files import atomic_directory


@pytest.fixture(scope="module")
def clf(trained_dir):
    return TextClassifier.from_pretrained(trained_dir)


def test_use_before_fit_raises_not_fitted():
    clf = TextClassifier()
    for call in (lambda: clf.predict("x"), lambda: clf.predict_proba(["x"]), lambda: clf.save_pretrained("/tmp/x")):
        with pytest.raises(NotFittedError, match="This TextClassifier instance is not fitted yet. Call 'fit'"):
            call()


def test_fit_refuses_misused_arguments_before_loading_a_model():
    from bertfit import ConfigError, DataError, TrainConfig

    texts, labels = ["good film", "bad film"] * 10, ["pos", "neg"] * 10
    with pytest.raises(ConfigError, match=r"first argument is the model .*TextClassifier\(config=TrainConfig"):
        TextClassifier(TrainConfig()).fit(texts, labels)
    with pytest.raises(DataError, match="got one string; pass \\[text\\]"):
        TextClassifier().fit("good film", ["pos"])
    with pytest.raises(ConfigError, match=r"validation must be a \(texts, labels\) pair"):
        TextClassifier().fit(texts, labels, validation=(["good"],))
    for missing in (None, float("nan"), np.float32("nan")):  # would have been classes "None" and "nan"
        with pytest.raises(DataError, match=r"10 text\(s\) of <memory> have no label \(None or NaN: rows 2, 4"):
            TextClassifier().fit(texts, ["pos", missing] * 10)


def test_predict_returns_label_names(clf):
    assert clf.labels == ["neg", "pos"]
    assert clf.predict("the film was superb") == "pos"
    assert clf.predict(["the plot is really awful", "it was quite lovely"]) == ["neg", "pos"]
    assert clf.predict([]) == []


def test_predict_proba_is_softmax_of_raw_logits_in_input_order(clf):
    texts = ["the film was good", "bad", "this movie is very very boring and the plot is poor", "nice"]
    probs = clf.predict_proba(texts)
    with torch.no_grad():
        for text, row in zip(texts, probs):  # one text at a time: no padding, no sorting
            logits = clf.model_(**clf.tokenizer_(text, return_tensors="pt")).logits[0]
            np.testing.assert_allclose(row, torch.softmax(logits, -1).numpy(), rtol=1e-5, atol=1e-6)
    assert probs.shape == (4, 2)
    np.testing.assert_allclose(clf.predict_proba("bad"), probs[1], rtol=1e-5, atol=1e-6)


def test_save_load_gives_identical_predictions(clf, tmp_path):
    texts = ["the film was good", "it was quite sad", "free prize call now"]
    clf.save_pretrained(tmp_path / "copy")
    again = TextClassifier.from_pretrained(tmp_path / "copy")
    np.testing.assert_array_equal(again.predict_proba(texts), clf.predict_proba(texts))
    assert again.info_ == clf.info_ and again.metrics == clf.metrics
    again.save_pretrained(tmp_path / "copy-of-copy")  # a reloaded model keeps its report
    assert (tmp_path / "copy-of-copy" / "report.html").is_file()


def test_saved_directory_is_a_standard_hf_model(trained_dir, clf):
    from transformers import pipeline

    files = {p.name for p in trained_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "bertfit.json", "metrics.json"} <= files
    config = json.loads((trained_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    texts = ["the film was superb", "the plot is really awful", "hello"]
    hf = pipeline("text-classification", model=str(trained_dir), device="cpu")
    assert [r["label"] for r in hf(texts)] == clf.predict(texts)


def test_a_plain_pipeline_needs_truncation_for_texts_past_the_limit(trained_dir):
    # What the README tells users of transformers.pipeline: it does not truncate unless asked to.
    from transformers import pipeline

    long = "the film was very good " * 30  # 150 tokens, over the tiny model's 64
    hf = pipeline("text-classification", model=str(trained_dir), device="cpu")
    with pytest.raises((RuntimeError, IndexError)):
        hf(long)
    truncated = hf(long, truncation=True)
    cut = pipeline("text-classification", model=str(trained_dir), device="cpu", truncation=True)
    assert cut([long]) == truncated and truncated[0]["label"] in {"neg", "pos"}


def test_save_refuses_non_empty_directory_and_keeps_it(clf, tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="already exists and is not empty; pass --overwrite"):
        clf.save_pretrained(target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    clf.save_pretrained(target, overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "bertfit.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_directory(target, overwrite=False) as staging:
        (staging / "half.bin").write_bytes(b"x")
        raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        TextClassifier.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="could not load model"):
        TextClassifier.from_pretrained(tmp_path / "empty")


def test_plain_hf_classifier_loads_with_its_labels(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=3, id2label={0: "x", 1: "y", 2: "z"}, label2id={"x": 0, "y": 1, "z": 2}
    )
    model.save_pretrained(tmp_path / "plain")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "plain")
    clf = TextClassifier.from_pretrained(tmp_path / "plain")
    assert clf.labels == ["x", "y", "z"] and clf.max_length == 64
    assert clf.predict("good") in {"x", "y", "z"}


def test_base_model_without_a_trained_head_is_refused(tiny_model_dir):
    # The fixture is a BertModel checkpoint: a classifier loaded from it would have a random head.
    with pytest.raises(ModelError, match=r"not a trained classifier: .*lack 2 tensor\(s\) .*classifier\.bias"):
        TextClassifier.from_pretrained(tiny_model_dir)


def test_default_model_is_found_by_package_metadata_and_verified():
    path = default_model_path()
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()


def test_predict_uses_the_saved_threshold(trained_dir):
    clf = TextClassifier.from_pretrained(trained_dir)
    texts = ["the film was superb", "the plot is really awful", "it was quite lovely", "the actor was very sad"]
    p_pos = clf.predict_proba(texts)[:, clf.labels.index("pos")]
    tuned = replace(clf.decision, positive_label="pos", threshold=float(np.sort(p_pos)[1]))  # 2nd lowest and up
    clf.card_ = clf.card.with_decision(tuned)
    expected = ["pos" if p >= clf.threshold else "neg" for p in p_pos]
    assert clf.predict(texts) == expected and expected.count("pos") == 3
    assert clf.predict(texts[1]) == expected[1]
    clf.card_ = clf.card.with_decision(replace(tuned, threshold=None))
    assert clf.predict(texts) == [clf.labels[k] for k in clf.predict_proba(texts).argmax(1)]


def test_decide_argmax_without_threshold_or_for_many_labels():
    from bertfit.decision import DecisionRule

    def decide(probs, labels, positive_label=None, threshold=None):
        return DecisionRule(tuple(labels), positive_label=positive_label, threshold=threshold).decide(probs)

    probs = np.array([[0.6, 0.4], [0.45, 0.55]])
    assert decide(probs, ["a", "b"]).tolist() == [0, 1]
    assert decide(probs, ["a", "b"], "b", threshold=0.35).tolist() == [1, 1]
    assert decide(probs, ["a", "b"], "a", threshold=0.5).tolist() == [0, 1]
    three = np.array([[0.2, 0.5, 0.3]])
    assert decide(three, ["a", "b", "c"], None, threshold=0.1).tolist() == [1]


@pytest.mark.parametrize(
    ("requested", "device", "cpu_bf16", "cuda_bf16", "expected"),
    [
        ("auto", "cpu", True, False, "bf16"),  # AVX512-BF16 / AMX
        ("auto", "cpu", False, False, "fp32"),
        ("auto", "cuda", False, True, "bf16"),  # Ampere and later
        ("auto", "cuda", False, False, "fp16"),  # older GPUs: fp16 with loss scaling
        ("fp32", "cpu", True, False, "fp32"),
        ("bf16", "cpu", False, False, "bf16"),  # asked for: kept, with a warning
    ],
)
def test_precision_choice_follows_the_hardware(monkeypatch, requested, device, cpu_bf16, cuda_bf16, expected):
    from bertfit.hardware import resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: cpu_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    assert resolve_precision(requested, device) == (expected, device)


_FAULTS = """
import ctypes, resource, sys
from bertfit.hardware import keep_freed_memory
print(keep_freed_memory() if sys.argv[1] == "keep" else None)
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
def block():  # 40 MiB, above the largest mmap threshold glibc sets itself (32 MiB): allocated, written, freed
    p = libc.malloc(40 << 20)
    ctypes.memset(p, 1, 40 << 20)
    libc.free(p)
block()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    block()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_keep_freed_memory_reuses_freed_blocks_instead_of_faulting_in_new_pages():
    def run(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
        made, faults = out.stdout.split()
        return made, int(faults)

    made, kept = run("keep")
    _, default = run("default")
    assert made == "True"
    assert default > 4 * 40 * 2**20 // 4096 // 2  # every 40 MiB block faults in its pages again
    assert kept < default / 10


def test_keep_freed_memory_leaves_the_users_malloc_settings(monkeypatch):
    from bertfit.hardware import keep_freed_memory

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert keep_freed_memory() is False


def test_bf16_prediction_runs_in_bf16_and_stays_close_to_fp32(trained_dir):
    fp32 = TextClassifier.from_pretrained(trained_dir)
    bf16 = TextClassifier.from_pretrained(trained_dir, precision="bf16")
    seen = []
    hook = bf16.model_.classifier.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    texts = ["the film was good", "it was quite sad", "free prize call now", "the plot is really awful"]
    probs = bf16.predict_proba(texts)
    hook.remove()
    assert seen == [torch.bfloat16]  # autocast was on
    np.testing.assert_allclose(probs, fp32.predict_proba(texts), atol=3e-2)
    assert bf16.model_.classifier.weight.dtype == torch.float32  # the weights themselves stay fp32
