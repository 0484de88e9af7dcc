from __future__ import annotations

import json

import pytest

from bertfit import ConfigError, TrainConfig


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("epochs", 0, "epochs must be a number > 0"),
        ("learning_rate", 2.0, "learning_rate must be a number between 0 and 1"),
        ("val_size", 1.5, "val_size must be a share between 0 and 1"),
        ("batch_size", 0, "batch_size must be an integer >= 1"),
        ("metric_for_best_model", "auc", "metric_for_best_model must be one of macro_f1"),
        ("precision", "int4", "precision must be one of auto, bf16, fp16, fp32"),
        ("eval_strategy", "steps", "eval_steps must be an integer >= 1"),
        ("max_length", 4, "max_length must be an integer >= 8"),
        ("class_weights", "heavy", "class_weights must be 'none', 'balanced' or a JSON object of label to positive"),
        ("class_weights", '{"spam": -1}', "class_weights must be"),
    ],
)
def test_invalid_values_fail_before_any_model_loads(field, value, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{field: value})


def test_unknown_keys_suggest_the_closest_name():
    with pytest.raises(ConfigError, match=r"'learning_rte' \(did you mean 'learning_rate'\?\)"):
        TrainConfig.from_dict({"learning_rte": 1e-4})


def test_dict_round_trip_and_dashed_keys():
    config = TrainConfig(epochs=2, learning_rate=3e-5)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict({"batch-size": 8}).batch_size == 8


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("c.json", json.dumps({"epochs": 2, "learning_rate": 3e-5, "seed": 1})),
        ("c.yaml", "epochs: 2\nlearning_rate: 3.0e-5\nseed: 1\n"),
        ("c.toml", "epochs = 2\nlearning_rate = 3e-5\nseed = 1\n"),
    ],
)
def test_config_files_and_overrides(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    config = TrainConfig.from_file(path, seed=7, batch_size=None)
    assert (config.epochs, config.learning_rate, config.seed, config.batch_size) == (2, 3e-5, 7, 32)


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig.from_file(tmp_path / "missing.yaml")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ConfigError, match="could not parse"):
        TrainConfig.from_file(tmp_path / "c.json")
    (tmp_path / "c.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        TrainConfig.from_file(tmp_path / "c.yaml")
    (tmp_path / "c.ini").write_text("x")
    with pytest.raises(ConfigError, match="unknown config format"):
        TrainConfig.from_file(tmp_path / "c.ini")


def test_class_weights_from_json_text():
    assert TrainConfig(class_weights='{"spam": 5, "ham": 1}').class_weights == {"spam": 5.0, "ham": 1.0}
    assert TrainConfig(class_weights="balanced").class_weights == "balanced"
