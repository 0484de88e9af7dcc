import bertfit


def test_public_api_is_pinned():
    assert bertfit.__all__ == [
        "BertfitError",
        "ConfigError",
        "DataError",
        "MissingDependencyError",
        "ModelError",
        "NotFittedError",
        "OutputExistsError",
        "TextClassifier",
        "TextDataset",
        "TrainConfig",
        "TrainingError",
        "__version__",
        "evaluate",
        "load_data",
        "predict_file",
        "train",
    ]
    for name in bertfit.__all__:
        assert getattr(bertfit, name) is not None
    assert callable(bertfit.train) and callable(bertfit.evaluate)  # the functions, not the modules of that name


def test_errors_share_one_base():
    errors = [name for name in bertfit.__all__ if name.endswith("Error") and name != "BertfitError"]
    assert len(errors) == 7
    for name in errors:
        assert issubclass(getattr(bertfit, name), bertfit.BertfitError)
