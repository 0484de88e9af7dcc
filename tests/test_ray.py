"""The README's cluster recipe, run for real on a local Ray instance: Ray Data map_batches with BatchPredictor."""

from __future__ import annotations

import pytest
import ray  # the dev extra installs ray[data]
from conftest import sentiment_rows

from bertfit import TextClassifier
from bertfit.predict import BatchPredictor


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_data_map_batches_matches_predict(local_ray, trained_dir):
    texts = [text for text, _ in sentiment_rows(40)]
    ds = ray.data.from_items([{"text": text, "id": i} for i, text in enumerate(texts)])
    out = ds.map_batches(BatchPredictor, fn_constructor_args=(str(trained_dir),), batch_size=16, concurrency=1)
    rows = sorted(out.take_all(), key=lambda row: row["id"])
    expected = TextClassifier.from_pretrained(trained_dir).predict(texts)
    assert [row["label"] for row in rows] == expected
    assert all(abs(row["prob_neg"] + row["prob_pos"] - 1) < 1e-5 for row in rows)
