"""BertfitClassifier as a scikit-learn estimator: parameters, clone, fit/predict in classes_ order, save/load, and
the model-selection tools (GridSearchCV, cross_val_score, CalibratedClassifierCV) on the tiny model."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_TRAINING, sentiment_rows
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.utils.validation import check_is_fitted

import bertfit
from bertfit import BertfitClassifier, ConfigError, DataError, NotFittedError, TextClassifier, TrainConfig

# The estimator's parameters among TINY_TRAINING; evals_per_epoch goes through the config escape hatch.
TINY = {k: v for k, v in TINY_TRAINING.items() if k != "evals_per_epoch"}
ROWS = sentiment_rows()
TEXTS = [text for text, _ in ROWS]
WORDS = [label for _, label in ROWS]  # "pos" / "neg"
# Cross-validation trains on half of these. The tiny model learned both halves to >= 97.5% accuracy at 8 epochs and
# 2e-3 on three draws of this data; with 60 training texts, or at 5e-3, a fold could stay at the prior.
CV_PARAMS = {"epochs": 8, "learning_rate": 2e-3}
CV_ROWS = sentiment_rows(240)
CV_TEXTS, CV_WORDS = [text for text, _ in CV_ROWS], [label for _, label in CV_ROWS]


def tiny(tiny_model_dir, **params) -> BertfitClassifier:
    return BertfitClassifier(str(tiny_model_dir), **{**TINY, "config": {"evals_per_epoch": 1}, **params})


@pytest.fixture(scope="module")
def fitted(tiny_model_dir) -> BertfitClassifier:
    """Trained once for the module on labels 9 and 10 as strings: numpy sorts them "10" < "9", bertfit 9 < 10."""
    labels = ["9" if label == "pos" else "10" for label in WORDS]
    return tiny(tiny_model_dir).fit(pd.Series(TEXTS), labels)


def test_parameters_mirror_train_config_defaults():
    params = BertfitClassifier().get_params()
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    assert params.pop("baselines") is False and params.pop("config") is None
    assert params == {name: defaults[name] for name in params}
    config = BertfitClassifier(learning_rate=3e-4, config={"long_text": "truncate"}).train_config()
    assert (config.learning_rate, config.long_text, config.baselines) == (3e-4, "truncate", False)


def test_unfitted_estimator_raises_sklearn_and_bertfit_not_fitted():
    estimator = BertfitClassifier()
    with pytest.raises(SklearnNotFittedError, match="BertfitClassifier instance is not fitted yet"):
        estimator.predict(["good film"])
    with pytest.raises(NotFittedError):
        estimator.predict_proba(["good film"])
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(estimator)
    with pytest.raises(NotFittedError):
        estimator.save("anywhere")


def test_fit_predicts_in_classes_order(fitted):
    check_is_fitted(fitted)
    assert fitted.classes_.tolist() == ["10", "9"]  # numpy's order, as LogisticRegression would give
    assert fitted.classifier_.labels == ["9", "10"]  # the model's own label ids
    probs = fitted.predict_proba(TEXTS[:20])
    np.testing.assert_allclose(probs, fitted.classifier_.predict_proba(TEXTS[:20])[:, [1, 0]])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    expected = ["9" if label == "pos" else "10" for label in WORDS]
    predicted = fitted.predict(np.array(TEXTS))
    assert predicted.tolist() == [fitted.classifier_.predict(TEXTS)[i] for i in range(len(TEXTS))]
    assert fitted.score(TEXTS, expected) == pytest.approx(np.mean(predicted == np.array(expected)))
    assert fitted.score(TEXTS, expected) > 0.9  # it learned the sentiment words


def test_integer_labels_come_back_as_integers(tiny_model_dir):
    labels = np.array([1 if label == "pos" else 0 for label in WORDS])
    estimator = tiny(tiny_model_dir, epochs=1).fit(TEXTS, labels)
    assert estimator.classes_.tolist() == [0, 1] and estimator.classes_.dtype.kind == "i"
    assert set(estimator.predict(TEXTS).tolist()) <= {0, 1}


def test_clone_is_an_unfitted_copy_with_the_same_params(fitted):
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert copy.config is not fitted.config  # a deep copy: changing one leaves the other alone
    assert not hasattr(copy, "classifier_") and not hasattr(copy, "classes_")
    with pytest.raises(SklearnNotFittedError):
        copy.predict(TEXTS[:2])
    assert copy.set_params(learning_rate=1e-3).learning_rate == 1e-3 and fitted.learning_rate == TINY["learning_rate"]


def test_explicit_validation_data_is_used(tiny_model_dir):
    val_texts, val_labels = TEXTS[100:], WORDS[100:]
    estimator = tiny(tiny_model_dir, epochs=1).fit(TEXTS[:100], WORDS[:100], validation_data=(val_texts, val_labels))
    record = estimator.classifier_.card.training
    assert (record.train_data.rows, record.validation_data.rows) == (100, 20)


def test_save_loads_as_text_classifier_and_as_estimator(fitted, tmp_path):
    path = fitted.save(tmp_path / "model")
    texts = TEXTS[:10]
    loaded = TextClassifier.from_pretrained(path)
    np.testing.assert_allclose(loaded.predict_proba(texts)[:, [1, 0]], fitted.predict_proba(texts), atol=1e-6)
    again = BertfitClassifier.from_pretrained(path)
    check_is_fitted(again)
    assert again.get_params() == {**fitted.get_params(), "config": None}  # the run's options, as parameters
    assert again.classes_.tolist() == [9, 10]  # integer-like names come back as integers
    assert again.predict(texts).tolist() == [int(label) for label in fitted.predict(texts)]


def test_grid_search_picks_the_learning_rate_that_learns(tiny_model_dir):
    search = GridSearchCV(tiny(tiny_model_dir, **CV_PARAMS), {"learning_rate": [1e-6, 2e-3]}, cv=2)
    search.fit(CV_TEXTS, CV_WORDS)
    assert search.best_params_ == {"learning_rate": 2e-3}
    low, high = search.cv_results_["mean_test_score"]
    assert high > 0.9 and high > low
    assert search.best_estimator_.learning_rate == 2e-3 and search.score(TEXTS, WORDS) > 0.9


def test_cross_val_score_fits_one_clone_per_fold(tiny_model_dir):
    scores = cross_val_score(tiny(tiny_model_dir, **CV_PARAMS), CV_TEXTS, CV_WORDS, cv=2)
    assert scores.shape == (2,) and scores.min() > 0.9


def test_calibrated_classifier_cv_gives_probabilities_in_classes_order(tiny_model_dir):
    calibrated = CalibratedClassifierCV(tiny(tiny_model_dir, **CV_PARAMS), cv=2).fit(CV_TEXTS, CV_WORDS)
    assert calibrated.classes_.tolist() == ["neg", "pos"]
    probs = calibrated.predict_proba(TEXTS[:20])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # Column 1 is P(pos): high on the positive texts, low on the negative ones.
    positive = np.array(WORDS[:20]) == "pos"
    assert probs[positive, 1].min() > probs[~positive, 1].max()


def test_calibration_of_a_fitted_estimator(tiny_model_dir):
    estimator = tiny(tiny_model_dir).fit(TEXTS[:80], WORDS[:80])
    model = estimator.classifier_
    try:
        from sklearn.frozen import FrozenEstimator  # scikit-learn >= 1.6; cv="prefit" before
    except ImportError:
        calibrated = CalibratedClassifierCV(estimator, cv="prefit")
    else:
        calibrated = CalibratedClassifierCV(FrozenEstimator(estimator))
    calibrated.fit(TEXTS[80:], WORDS[80:])
    probs = calibrated.predict_proba(TEXTS[:20])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert calibrated.classes_.tolist() == estimator.classes_.tolist() == ["neg", "pos"]
    assert estimator.classifier_ is model  # the fitted model was calibrated, not trained again


def test_multi_label_fit_predicts_label_lists(tiny_model_dir):
    from test_multilabel import ML_TRAINING, label_set_rows

    rows = label_set_rows(200)
    texts, sets = [text for text, _ in rows], [list(labels) for _, labels in rows]
    params = {k: v for k, v in ML_TRAINING.items() if k != "evals_per_epoch"}
    estimator = tiny(tiny_model_dir, **params).fit(texts, sets)
    assert estimator.multi_label_ and estimator.classes_.tolist() == ["neg", "pos", "spam"]
    probs = estimator.predict_proba(texts[:12])
    assert probs.shape == (12, 3) and not np.allclose(probs.sum(axis=1), 1.0)  # one sigmoid per label
    predicted = estimator.predict(texts)
    assert all(isinstance(row, list) and set(row) <= {"neg", "pos", "spam"} for row in predicted)
    assert predicted == estimator.classifier_.predict(texts)  # classes_ order is the model's here
    exact = np.mean([set(p) == set(t) for p, t in zip(predicted, sets)])
    # Subset accuracy; the best constant answer gets 1/6 (six equally common label sets).
    assert estimator.score(texts, sets) == pytest.approx(exact) and exact > 0.25
    assert cross_val_score(clone(estimator).set_params(epochs=1), texts, sets, cv=KFold(2)).shape == (2,)


def test_bad_inputs_name_the_fix(tiny_model_dir):
    estimator = tiny(tiny_model_dir)
    with pytest.raises(DataError, match="MultiLabelBinarizer"):
        estimator.fit(TEXTS, np.zeros((len(TEXTS), 2)))
    with pytest.raises(DataError, match="1-D sequence of texts"):
        estimator.fit(np.array(TEXTS).reshape(-1, 1), WORDS)
    with pytest.raises(DataError, match="item 1 is None"):
        estimator.fit(["good", None], ["pos", "neg"])
    with pytest.raises(ValueError, match="Unknown label type"):
        estimator.fit(TEXTS, np.linspace(0, 1, len(TEXTS)))
    with pytest.raises(ConfigError, match="learning_rate given in config and as a parameter"):
        tiny(tiny_model_dir, config={"learning_rate": 1e-3}).fit(TEXTS, WORDS)
    with pytest.raises(ConfigError, match="call save"):
        tiny(tiny_model_dir, config={"output_dir": "out"}).fit(TEXTS, WORDS)
    with pytest.raises(ConfigError, match="epochs must be"):
        tiny(tiny_model_dir, epochs=0).fit(TEXTS, WORDS)


def test_exported_lazily_from_bertfit():
    assert bertfit.BertfitClassifier is BertfitClassifier and "BertfitClassifier" in bertfit.__all__
