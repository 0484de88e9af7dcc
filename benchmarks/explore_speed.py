"""How long `bertfit explore` takes on 1,000,000 short texts (target: under 60 s on a 2-core CPU).

Builds a 1,000,000-row CSV by repeating the SST-2 (GLUE) training file, then times the whole of `explore` (reading,
statistics, token counts on a sample, plots) with the embedded default model's tokenizer.

    python benchmarks/explore_speed.py [--rows 1000000] [--source ../shared/datasets/sst2/train.csv]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from bertfit.backbone import default_model_path, load_tokenizer
from bertfit.explore import explore

TARGET_SECONDS = 60
DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sst2" / "train.csv"


def make_file(source: Path, rows: int, path: Path) -> None:
    frame = pd.read_csv(source, keep_default_na=False)
    repeats = -(-rows // len(frame))
    big = pd.concat(itertools.repeat(frame, repeats), ignore_index=True).iloc[:rows]
    big.to_csv(path, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "big.csv"
        make_file(args.source, args.rows, data)
        size_mb = data.stat().st_size / 1e6
        tokenizer = load_tokenizer(str(default_model_path()))  # loading the model is not part of explore's time
        start = time.perf_counter()
        result = explore(data, tokenizer=tokenizer, output_dir=Path(tmp) / "plots")
        seconds = time.perf_counter() - start
    print(f"rows: {result['train']['rows']:,} ({size_mb:.0f} MB CSV), cpu cores: {os.cpu_count()}")
    print(f"token statistics on {result['train']['token_sample']['texts']:,} sampled texts")
    print(
        f"explore: {seconds:.1f} s (target < {TARGET_SECONDS} s) -> {'OK' if seconds < TARGET_SECONDS else 'TOO SLOW'}"
    )


if __name__ == "__main__":
    main()
