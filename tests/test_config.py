from __future__ import annotations

import json
import re

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


# -- values parsed to their declared types -------------------------------------------------------------------------

# (key, the value as JSON, YAML and TOML write it, what the config holds)
TYPED = [
    ("overwrite", ('"false"', '"false"', '"false"'), False),
    ("overwrite", ('"Yes"', "yes", '"yes"'), True),
    ("overwrite", ("0", "0", "0"), False),
    ("baselines", ("false", "false", "false"), False),
    ("seed", ('"42"', '"42"', '"42"'), 42),
    ("batch_size", ("8.0", "8.0", "8.0"), 8),
    ("max_length", ("null", "null", '"none"'), None),
    ("learning_rate", ('"1e-4"', "1e-4", '"1e-4"'), 1e-4),  # YAML reads 1e-4 (no dot) as a string
    ("warmup_ratio", ("0", "0", "0"), 0.0),
    ("positive_label", ("1", "1", "1"), "1"),  # an integer label name
    ("cache_dir", ('"none"', "none", '"none"'), "none"),  # a string field keeps "none" as text
]


@pytest.mark.parametrize(("suffix", "index"), [(".json", 0), (".yaml", 1), (".toml", 2)])
@pytest.mark.parametrize(("key", "written", "expected"), TYPED)
def test_file_values_are_parsed_to_their_declared_type(tmp_path, suffix, index, key, written, expected):
    text = {
        ".json": f'{{"{key}": {written[0]}}}',
        ".yaml": f"{key}: {written[1]}\n",
        ".toml": f"{key} = {written[2]}\n",
    }
    path = tmp_path / f"c{suffix}"
    path.write_text(text[suffix])
    value = getattr(TrainConfig.from_file(path), key)
    assert value == expected and type(value) is type(expected)


# (key, a wrongly typed value, the expected type named in the message)
REFUSED = [
    ("overwrite", "maybe", "true or false"),
    ("overwrite", 2, "true or false"),
    ("overwrite", None, "true or false"),
    ("seed", "42.5", "an integer"),
    ("batch_size", 8.5, "an integer"),
    ("batch_size", True, "an integer"),
    ("eval_steps", "1e3", r"an integer .* or null"),
    ("learning_rate", True, "a finite number"),
    ("learning_rate", "nan", "a finite number"),
    ("epochs", float("inf"), "a finite number"),
    ("epochs", "three", "a finite number"),
    ("positive_label", True, r"a string \(quote it in YAML\) or null"),  # YAML reads positive_label: yes as true
    ("text_column", ["a"], "a string"),
    ("precision", 16.0, "a string"),
    ("max_windows", {"a": 1}, "an integer"),
]


@pytest.mark.parametrize(("key", "value", "expected"), REFUSED)
def test_wrongly_typed_values_name_the_key_the_value_and_the_type(key, value, expected):
    pattern = rf"^{key} must be {expected}.*, got {re.escape(repr(value))} \({type(value).__name__}\)"
    with pytest.raises(ConfigError, match=pattern):
        TrainConfig.from_dict({key: value})
    with pytest.raises(ConfigError, match=pattern):
        TrainConfig(**{key: value})


@pytest.mark.parametrize(
    ("suffix", "text"),
    [(".json", '{"seed": "x"}'), (".yaml", "seed: x\n"), (".toml", 'seed = "x"\n'), (".toml", "seed = 1979-05-27\n")],
)
def test_wrongly_typed_file_values_are_config_errors(tmp_path, suffix, text):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match="seed must be an integer"):
        TrainConfig.from_file(path)


def test_direct_construction_parses_too():
    config = TrainConfig(overwrite="false", seed="7", epochs="2.5", max_grad_norm=1, max_length="null")
    assert config.overwrite is False and config.seed == 7 and config.epochs == 2.5 and config.max_length is None
    assert type(config.max_grad_norm) is float


def test_bad_keys_and_seed_range():
    with pytest.raises(ConfigError, match=r"config keys must be option names \(strings\), got 1 \(int\)"):
        TrainConfig.from_dict({1: 2})  # YAML "1: 2"
    with pytest.raises(ConfigError, match="'batch_size' is given twice"):
        TrainConfig.from_dict({"batch-size": 8, "batch_size": 16})
    with pytest.raises(ConfigError, match="must be a mapping"):
        TrainConfig.from_dict(["seed", 1])
    with pytest.raises(ConfigError, match=r"seed must be an integer from 0 to 4294967295"):
        TrainConfig(seed=-1)  # numpy's split would fail after the data is read


@pytest.mark.parametrize("weights", [{"spam": float("inf")}, {"spam": 10**400}, '{"spam": 1e999}', {"spam": True}])
def test_class_weights_must_be_finite_numbers(weights):
    with pytest.raises(ConfigError, match="class_weights must be"):
        TrainConfig(class_weights=weights)


def test_class_weights_read_numbers_as_the_float_rule():
    assert TrainConfig(class_weights={"spam": "5", "ham": 1}).class_weights == {"spam": 5.0, "ham": 1.0}


def test_long_values_are_shortened_in_messages():
    with pytest.raises(ConfigError) as info:
        TrainConfig(seed="x" * 10_000)
    assert len(str(info.value)) < 300


def test_overwrite_false_as_a_string_keeps_an_existing_model(tiny_model_dir, sentiment_csv, tmp_path):
    # bool("false") is True: read naively, this config would replace the model directory.
    from typer.testing import CliRunner

    from bertfit.cli import app

    out = tmp_path / "model"
    out.mkdir()
    (out / "model.safetensors").write_text("precious")
    for value, error in [
        ('"false"', "OutputExistsError: "),
        ('"maybe"', "ConfigError: overwrite must be true or false"),
    ]:
        config = tmp_path / "train.json"
        config.write_text(f'{{"overwrite": {value}, "epochs": 1, "precision": "fp32"}}')
        args = ["train", "--data", sentiment_csv, "--config", config, "--model", tiny_model_dir, "--output-dir", out]
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 3, result.output
        assert error in result.stderr and "Traceback" not in result.output
        assert [(p.name, p.read_text()) for p in out.iterdir()] == [("model.safetensors", "precious")]
