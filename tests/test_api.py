import bertfit


def test_public_api_is_pinned():
    assert bertfit.__all__ == [
        "BertfitClassifier",
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


def test_the_functions_train_and_evaluate_are_not_hidden_by_their_modules():
    import subprocess
    import sys

    code = (
        "import bertfit.train, bertfit.evaluate, bertfit.cli\n"  # the submodules first, as the CLI imports them
        "from bertfit import evaluate, train\n"
        "assert callable(train) and callable(evaluate) and train.__module__ == 'bertfit.train', (train, evaluate)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
