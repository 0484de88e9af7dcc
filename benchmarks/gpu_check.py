"""GPU check, ready for when the `device` tool lends a GPU: training throughput and MFU of bertfit's loop on a
BERT-base-sized and a MiniLM-sized model, the automatic precision (bf16 on Ampere and later, fp16 with loss scaling
on older GPUs), prediction and serving on CUDA. Everything it needs is in the repository (no downloads: the models are
randomly initialized at the real sizes, the tokenizer is trained on examples/sms_spam.csv), so it runs on a machine
that reaches nothing.

    PYTHONPATH=src python3 benchmarks/gpu_check.py [--budget 420] [--json OUT.json]
    PYTHONPATH=src python3 benchmarks/gpu_check.py --device cpu --tiny      # a dry run of every step, on a CPU

On the device machine the whole run is meant to take under 8 minutes; each stage is skipped (and said so) once the
budget is spent. MFU is model FLOPs (6 x non-embedding parameters x real tokens + attention) per second over the
bf16 matrix-product ceiling measured at the start, and over the nominal dense bf16 peak of an H100/H200 SXM.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bertfit import TextDataset, TrainConfig, train
from bertfit.hardware import resolve_precision

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sms_spam.csv"
NOMINAL_BF16 = 989e12  # H100 / H200 SXM dense bf16, FLOP/s
SIZES = {  # name: (layers, hidden, heads, intermediate)
    "bert-base-sized": (12, 768, 12, 3072),
    "MiniLM-sized": (6, 384, 12, 1536),
}
TINY_SIZES = {"tiny-a": (2, 64, 4, 128), "tiny-b": (1, 32, 4, 64)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--budget", type=float, default=420, help="seconds for the whole check")
    parser.add_argument("--tiny", action="store_true", help="tiny models and data (a dry run on a CPU)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here; run with --device cpu --tiny for a dry run")
    results: dict = {"machine": _machine(args.device)}
    print(json.dumps(results["machine"], indent=2))
    texts, labels = _data(args.tiny)
    with tempfile.TemporaryDirectory() as work:
        tokenizer_dir = _tokenizer(Path(work), texts)
        results["precision"] = _precision_checks(args.device)
        sizes = TINY_SIZES if args.tiny else SIZES
        results["training"] = {}
        for name, size in sizes.items():
            if time.perf_counter() - start > args.budget * 0.6:
                print(f"skipped {name}: the budget is spent")
                continue
            model_dir = _random_model(Path(work) / name, tokenizer_dir, size)
            results["training"][name] = _training(model_dir, texts, labels, args, results["machine"]["ceiling"])
        trained = results["training"] and next(iter(results["training"].values()))["model_dir"]
        if trained and time.perf_counter() - start < args.budget * 0.85:
            results["prediction"] = _prediction(trained, texts, args.device)
            results["serving"] = _serving(trained, texts[:64])
        results["fp16_training"] = _fp16_training(Path(work), tokenizer_dir, texts, labels, args)
    results["seconds"] = round(time.perf_counter() - start, 1)
    _print_summary(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


def _machine(device: str) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device}
    if device == "cuda":
        info.update(gpu=torch.cuda.get_device_name(), capability=torch.cuda.get_device_capability())
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    info["ceiling"] = _matmul_ceiling(device)
    return info


def _matmul_ceiling(device: str) -> float:
    # In the precision auto trains in there: bf16 on a GPU that has it (the check's subject); a dry run on a CPU
    # without bf16 measures fp32, not an emulated bf16 that is ~50x slower.
    n = 8192 if device == "cuda" else 1024
    dtype = torch.bfloat16 if resolve_precision("auto", device).name == "bf16" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    _sync(device)
    return 2 * n**3 * 10 / (time.perf_counter() - start)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _data(tiny: bool) -> tuple[list[str], list[str]]:
    frame = pd.read_csv(EXAMPLE, keep_default_na=False)
    if tiny:
        frame = frame.groupby("label").head(60)
    return frame["text"].tolist(), frame["label"].tolist()


def _tokenizer(work: Path, texts: list[str]) -> Path:
    # A WordPiece vocabulary of BERT's size, trained on the example texts: real tokenization cost, no download.
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=30522, min_frequency=1)
    path = work / "tokenizer"
    path.mkdir()
    wordpiece.save_model(str(path))
    BertTokenizerFast(vocab_file=str(path / "vocab.txt"), model_max_length=512).save_pretrained(path)
    return path


def _random_model(path: Path, tokenizer_dir: Path, size: tuple[int, int, int, int]) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    layers, hidden, heads, intermediate = size
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _precision_checks(device: str) -> dict:
    auto = resolve_precision("auto", device).name
    if device == "cuda":  # bf16 on Ampere and later, fp16 with loss scaling before
        expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    else:
        expected = "bf16" if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported() else "fp32"
    result = {"auto": auto, "expected": expected, "ok": auto == expected}
    print(f"precision auto -> {auto} (expected {result['expected']}): {'ok' if result['ok'] else 'WRONG'}")
    return result


def _training(model_dir: Path, texts, labels, args, ceiling: float) -> dict:
    trained_dir = model_dir.with_name(f"{model_dir.name}-trained")  # prediction and serving use the trained model
    config = TrainConfig(
        model_name_or_path=str(model_dir),
        output_dir=str(trained_dir),
        epochs=1 if args.tiny else 2,
        batch_size=64,
        learning_rate=1e-4,
        max_length=128,
        precision="auto",
        baselines=False,
        threshold_metric="none",
        cache_dir="none",
    )
    clf = train(config, TextDataset(texts, labels))
    record = clf.card.training
    eval_seconds = sum(row.get("eval_runtime", 0.0) for row in record.log_history)
    seconds = record.train_seconds - eval_seconds
    flops = _flops(clf.model_, record.train_tokens, texts, clf.tokenizer_, config.epochs)
    result = {
        "model_dir": str(trained_dir),
        "train_seconds": round(seconds, 2),
        "tokens_per_second": round(record.train_tokens / seconds),
        "mfu_vs_ceiling": round(flops / seconds / ceiling, 4),
        "mfu_vs_nominal_bf16": round(flops / seconds / NOMINAL_BF16, 4),
        "precision": record.precision,
        "train_loss": [row["train_loss"] for row in record.history],
        "val_accuracy": clf.metrics["accuracy"],
    }
    print(f"{model_dir.name}: {json.dumps(result)}")
    return result


def _flops(model, real_tokens: int, texts, tokenizer, epochs: float) -> float:
    embeddings = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    non_embedding = sum(p.numel() for p in model.parameters()) - embeddings
    lengths = np.array([len(ids) for ids in tokenizer(texts, truncation=True, max_length=128)["input_ids"]])
    attention = 12 * model.config.num_hidden_layers * model.config.hidden_size * float((lengths**2).sum()) * epochs
    return 6 * non_embedding * real_tokens + attention * 0.9  # 0.9: the training share of the texts


def _prediction(model_dir: str, texts: list[str], device: str) -> dict:
    from bertfit import TextClassifier

    exact = TextClassifier.from_pretrained(model_dir, device=device, batch_size=256)
    fast = exact.with_precision("auto")
    fast.predict_proba(texts[:256])  # warm-up
    _sync(device)
    start = time.perf_counter()
    probs = fast.predict_proba(texts)
    _sync(device)
    seconds = time.perf_counter() - start
    agreement = float((probs.argmax(1) == exact.predict_proba(texts).argmax(1)).mean())
    result = {"texts_per_second": round(len(texts) / seconds), "precision": fast.precision_.name}
    result["label_agreement_with_fp32"] = agreement
    print(f"prediction: {json.dumps(result)}")
    return result


def _serving(model_dir: str, texts: list[str]) -> dict:
    try:
        from fastapi.testclient import TestClient

        from bertfit.model import load_classifier
        from bertfit.serve import create_app
    except Exception as err:  # the serve extra is optional; the device image may lack it
        print(f"serving: skipped ({err})")
        return {"skipped": str(err)}
    app = create_app(load_classifier(model_dir), precision="auto", max_texts=len(texts))
    # The app answers loopback names only (a guard against DNS rebinding); TestClient's default is "testserver".
    with TestClient(app, base_url="http://127.0.0.1") as client:  # runs the lifespan: the micro-batcher starts
        start = time.perf_counter()
        response = client.post("/predict", json={"texts": texts})
        seconds = time.perf_counter() - start
        health = client.get("/health").json()
    result = {"status": response.status_code, "texts": len(texts), "seconds": round(seconds, 3), "health": health}
    print(f"serving: {json.dumps(result)}")
    return result


def _fp16_training(work: Path, tokenizer_dir: Path, texts, labels, args) -> dict:
    # fp16 with loss scaling: the path older GPUs take; forced here on any GPU (bf16 hardware runs fp16 too).
    if args.device != "cuda":
        print("fp16 training: skipped (needs a CUDA GPU)")
        return {"skipped": "needs a CUDA GPU"}
    model_dir = _random_model(work / "fp16", tokenizer_dir, TINY_SIZES["tiny-a"])
    config = TrainConfig(
        model_name_or_path=str(model_dir),
        epochs=1,
        batch_size=32,
        precision="fp16",
        baselines=False,
        threshold_metric="none",
        cache_dir="none",
    )
    clf = train(config, TextDataset(texts, labels))
    losses = [row["train_loss"] for row in clf.card.training.history]
    result = {
        "precision": clf.card.training.precision,
        "train_loss": losses,
        "finite": bool(np.isfinite(losses).all()),
    }
    print(f"fp16 training: {json.dumps(result)}")
    return result


def _print_summary(results: dict) -> None:
    print("\n== summary")
    print(f"precision auto -> {results['precision']['auto']} ({'ok' if results['precision']['ok'] else 'WRONG'})")
    for name, row in results["training"].items():
        print(
            f"{name:<18} {row['tokens_per_second']:>10,} real tokens/s  MFU {row['mfu_vs_ceiling']:.1%} of the "
            f"measured ceiling ({results['machine']['ceiling'] / 1e12:.0f} TFLOP/s), "
            f"{row['mfu_vs_nominal_bf16']:.1%} of 989 TFLOP/s; {row['precision']}"
        )
    if "prediction" in results:
        p = results["prediction"]
        print(
            f"prediction: {p['texts_per_second']:,} texts/s ({p['precision']}), {p['label_agreement_with_fp32']:.2%}"
        )
    print(f"total {results['seconds']} s")


if __name__ == "__main__":
    main()
