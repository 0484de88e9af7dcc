"""Find likely mislabeled rows before training: confident learning on out-of-fold probabilities, and duplicates with
conflicting labels.

:func:`audit` scores every row of a labelled file with a model that never saw it (k-fold cross-validation: each
row's probabilities come from the fold it was held out of) and hands the probabilities to cleanlab's
``find_label_issues`` (confident learning: a row is flagged when its model is confident in another class, by
per-class thresholds estimated on the whole file). Flagged rows are ranked by cleanlab's label-quality score: the
out-of-fold probability of the given label (self-confidence; for label sets cleanlab's per-label aggregate), lowest
first. Besides, texts that are equal after normalization (case, whitespace, punctuation) but carry different labels
are reported, and, with the features at hand, near-duplicates by cosine similarity (default >= 0.95) with different
labels.

The out-of-fold probabilities come from one of three models:

- ``features="embeddings"`` (default): the frozen encoder's mean-pooled embeddings, the features of the
  frozen-embedding baseline (:func:`bertfit.baseline.frozen_embeddings`), computed once; then a standardized logistic
  regression per fold, its strength C the one of :data:`C_GRID` with the lowest out-of-fold log-loss.
- ``features="tfidf"``: TF-IDF of word 1-2 grams + logistic regression per fold; no encoder, seconds on any CPU.
- ``fine_tune=True``: a bertfit model fine-tuned per fold (k trainings: slow, usually the best probabilities).

Multi-label data (label sets) is audited one-vs-rest with cleanlab's ``multi_label=True``: the suggested labels are
those with an out-of-fold probability of at least 0.5.

Outputs (``output_dir``, written atomically): ``label_issues.csv``, the flagged rows ranked by quality, and
``audit.html``, a self-contained page (no scripts, no network) with the summary and the same table.
"""

from __future__ import annotations

import csv
import html
import logging
import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import ConfigError, DataError, MissingDependencyError

__all__ = [
    "audit",
    "AuditResult",
    "format_audit",
    "normalize_text",
    "conflicting_duplicates",
    "near_duplicate_pairs",
    "FEATURES",
    "ISSUES_FILE",
    "HTML_FILE",
]

logger = logging.getLogger(__name__)

FEATURES = ("embeddings", "tfidf")
ISSUES_FILE = "label_issues.csv"
HTML_FILE = "audit.html"
CSV_COLUMNS = (
    "rank",
    "row",
    "text",
    "given_label",
    "suggested_label",
    "quality",
    "issue",
    "related_rows",
    "similarity",
)
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)  # logistic regression strengths tried; the best out-of-fold log-loss wins
MAX_NEAR_DUPLICATE_ROWS = 100_000  # the cosine search is O(rows^2); above this many rows it is skipped (noted)
_RELATED_SHOWN = 10  # rows of a duplicate group named in related_rows
_HTML_ROWS = 500  # rows of the issue table in audit.html; the CSV holds all


@dataclass
class AuditResult:
    """What :func:`audit` found, row arrays in the order of the audited (non-empty) rows.

    Attributes:
        source: The file (or ``<memory>``) audited.
        labels: The classes, in the column order of ``pred_probs``.
        multi_label: Whether rows carry label sets.
        method: How the out-of-fold probabilities were made, in words.
        folds: Number of folds.
        rows: Each audited text's 0-based data-row index in the input file (header not counted;
            ``pandas.read_csv(FILE).iloc[row]``); rows with an empty text are not audited.
        texts: The audited texts.
        given: Their labels (label-set tuples for multi-label data).
        pred_probs: Out-of-fold probabilities, shape ``(n_rows, n_labels)``.
        quality: cleanlab's label-quality score per row in [0, 1]; low means likely mislabeled.
        label_issue: cleanlab's ``find_label_issues`` mask.
        suggested: The label (set) the out-of-fold model predicts per row.
        issues: The flagged rows, ranked by quality (lowest first): the rows of ``label_issues.csv``.
        conflict_groups: Groups (positions into the row arrays) of texts equal after normalization with different
            labels.
        near_pairs: ``(i, j, cosine)``: row position ``i``'s most similar differently-labelled row ``j``.
        oof_accuracy: Share of rows whose out-of-fold prediction equals the given label (set).
        seconds: Wall time of the audit.
        notes: What the user should know about the run (skipped checks, tiny classes).
        output_dir: Where the CSV and HTML went, if anywhere.
    """

    source: str
    labels: list[str]
    multi_label: bool
    method: str
    folds: int
    rows: np.ndarray
    texts: list[str]
    given: list
    pred_probs: np.ndarray
    quality: np.ndarray
    label_issue: np.ndarray
    suggested: list
    issues: list[dict[str, Any]]
    conflict_groups: list[np.ndarray]
    near_pairs: list[tuple[int, int, float]]
    oof_accuracy: float
    seconds: float
    notes: list[str] = field(default_factory=list)
    output_dir: str | None = None


def audit(
    data,
    output_dir: str | Path | None = None,
    *,
    overwrite: bool = False,
    text_column: str = "text",
    label_column: str = "label",
    label_sep: str | None = None,
    sep: str | None = None,
    encoding: str = "utf-8",
    folds: int = 5,
    features: str = "embeddings",
    fine_tune: bool = False,
    model_name_or_path: str | None = None,
    train_config: Any = None,
    near_duplicates: bool = True,
    similarity: float = 0.95,
    max_length: int = 256,
    batch_size: int = 64,
    seed: int = 0,
) -> AuditResult:
    """Find likely mislabeled rows and conflicting (near-)duplicates of a labelled dataset.

    Args:
        data: A labelled file in any format ``--data`` takes (read with :func:`bertfit.load_data`), or a
            :class:`~bertfit.data.TextDataset` (its rows are then numbered in its order).
        output_dir: Where ``label_issues.csv`` and ``audit.html`` go (written atomically); None writes nothing.
        overwrite: Replace an existing non-empty ``output_dir``.
        text_column, label_column, label_sep, sep, encoding: How to read ``data``, as in :func:`bertfit.load_data`.
        folds: Number of cross-validation folds (stratified by label for single-label data); at least 2.
        features: ``"embeddings"`` (frozen encoder, mean-pooled) or ``"tfidf"``: the logistic regression's features
            and the space of the near-duplicate search.
        fine_tune: Fine-tune a bertfit model per fold instead of the logistic regression (slow).
        model_name_or_path: The encoder (directory or hub id); None takes the embedded default model.
        train_config: A :class:`~bertfit.TrainConfig` for the per-fold fine-tuning (its output_dir and baselines are
            ignored); default: the default options.
        near_duplicates: Search for differently-labelled near-duplicates by cosine similarity of the features.
        similarity: The cosine similarity from which two texts count as near-duplicates.
        max_length, batch_size: Longest input in tokens and texts per forward pass of the frozen encoder.
        seed: Seed of the fold assignment.

    Returns:
        The :class:`AuditResult`; ``.issues`` are the ranked rows of the CSV.

    Raises:
        DataError: Unreadable data, fewer than two classes, or fewer rows than folds.
        ConfigError: An invalid option (folds, features, similarity).
        MissingDependencyError: cleanlab is not installed (``pip install 'bertfit[audit]'``).
        OutputExistsError: ``output_dir`` holds files and ``overwrite`` is False.
        ModelError: The encoder cannot be loaded.

    >>> print(format_audit(audit("examples/sms_spam.csv", "spam-audit")))  # doctest: +SKIP
    """
    from .data import data_source
    from .files import check_output_dir

    start = time.perf_counter()
    _check_options(folds, features, similarity)
    cleanlab = _cleanlab()
    if output_dir is not None:
        check_output_dir(output_dir, overwrite, [data_source(data)])  # fail before the forward passes, not after
    read = {"text_column": text_column, "label_column": label_column, "label_sep": label_sep}
    dataset, rows = _read(data, sep=sep, encoding=encoding, **read)
    notes = _check_data(dataset, folds)
    encoder = {"model_name_or_path": model_name_or_path, "max_length": max_length, "batch_size": batch_size}
    x = _features(dataset, features, **encoder) if (near_duplicates or not fine_tune) else None
    splits = _splits(dataset, folds, seed)
    if fine_tune:
        probs, method = _oof_fine_tune(dataset, splits, model_name_or_path, train_config, seed), "fine-tuned model"
    else:
        probs, c = _oof_logreg(x, dataset, splits)
        method = f"{features} + logistic regression (C={c:g})"
    pairs = _near_pairs(x, dataset, similarity, notes) if near_duplicates else []
    result = _result(cleanlab, dataset, rows, probs, pairs, method, folds)
    result.notes, result.issues = notes, _issue_rows(result, label_sep or ";")
    result.seconds = time.perf_counter() - start
    if output_dir is not None:
        _write(result, Path(output_dir), overwrite)
    logger.info("audited %d rows in %.1f s: %d flagged", len(rows), result.seconds, len(result.issues))
    return result


def _result(cleanlab, dataset, rows: np.ndarray, probs: np.ndarray, pairs, method: str, folds: int) -> AuditResult:
    """Confident learning and the exact-duplicate check on top of the out-of-fold probabilities."""
    issue, quality = _find_label_issues(cleanlab, dataset, probs)
    suggested = _suggested(probs, dataset)
    return AuditResult(
        source=dataset.source,
        labels=dataset.classes,
        multi_label=dataset.multi_label,
        method=f"{method}, {folds}-fold out-of-fold probabilities",
        folds=folds,
        rows=rows,
        texts=dataset.texts,
        given=dataset.labels,
        pred_probs=probs,
        quality=quality,
        label_issue=issue,
        suggested=suggested,
        issues=[],
        conflict_groups=conflicting_duplicates(dataset.texts, dataset.labels),
        near_pairs=pairs,
        oof_accuracy=float(np.mean([s == g for s, g in zip(suggested, dataset.labels)])),
        seconds=0.0,
    )


# -- checks --------------------------------------------------------------------------------------------------------


def _cleanlab():
    try:
        import cleanlab
        import cleanlab.filter
        import cleanlab.multilabel_classification.filter
        import cleanlab.multilabel_classification.rank
        import cleanlab.rank
    except ImportError:
        raise MissingDependencyError.for_extra("bertfit audit", "audit", "cleanlab") from None
    return cleanlab


def _check_options(folds: int, features: str, similarity: float) -> None:
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"folds must be an integer of at least 2, got {folds!r}; pass e.g. --folds 5")
    if features not in FEATURES:
        raise ConfigError(f"unknown features {features!r}; expected one of {list(FEATURES)}")
    if not 0 < similarity <= 1:
        raise ConfigError(f"similarity must be in (0, 1], got {similarity!r}; pass e.g. --similarity 0.95")


def _check_data(dataset, folds: int) -> list[str]:
    counts = dataset.label_counts()
    if len(counts) < 2:
        raise DataError(
            f"{dataset.source} has a single class {list(counts)}; an audit compares classes, so it needs at least "
            "two (check --label-column)"
        )
    if len(dataset) < folds:
        raise DataError(f"{dataset.source} has {len(dataset)} rows, fewer than --folds {folds}; lower --folds")
    small = sorted(label for label, n in counts.items() if n < folds)
    if small:
        note = f"classes with fewer rows than folds ({folds}), poorly estimated: {small}"
        logger.warning(note)
        return [note]
    return []


# -- reading -------------------------------------------------------------------------------------------------------


def _read(data, *, text_column, label_column, label_sep, sep, encoding):
    """The dataset and each text's data-row index in the file (load_data drops rows with empty texts)."""
    from .data import TextDataset, iter_text_chunks, load_data

    if isinstance(data, TextDataset):
        return (data.as_multi_label(label_sep) if label_sep else data), np.arange(len(data))
    dataset = load_data(data, text_column, label_column, sep=sep, encoding=encoding, label_sep=label_sep)
    # The same rule as load_data's: a row is kept when its text is not empty or blank.
    texts = (text for chunk in iter_text_chunks(data, text_column, sep=sep, encoding=encoding) for text in chunk)
    rows = np.array([i for i, text in enumerate(texts) if text.strip() != ""], dtype=np.int64)
    if len(rows) != len(dataset):  # pragma: no cover  (both readers follow one rule)
        raise RuntimeError(f"read {len(dataset)} labelled rows but {len(rows)} non-empty texts from {data}")
    return dataset, rows


# -- features and out-of-fold probabilities ------------------------------------------------------------------------


def _features(dataset, kind: str, *, model_name_or_path, max_length: int, batch_size: int):
    """``(n_rows, dim)`` features: frozen mean-pooled embeddings (dense) or TF-IDF (sparse, rows L2-normalized)."""
    if kind == "tfidf":
        return _tfidf(dataset.texts)
    from .backbone import load_sequence_classifier, load_tokenizer, resolve_model
    from .baseline import frozen_embeddings

    path = resolve_model(model_name_or_path)
    model = load_sequence_classifier(path)  # the encoder under the (unused) head runs, as in the baseline
    embeddings, _, seconds = frozen_embeddings(model, load_tokenizer(path), dataset.texts, [], max_length, batch_size)
    logger.info("embedded %d texts in %.1f s", len(dataset), seconds)
    return embeddings


def _tfidf(texts: list[str]):
    from sklearn.feature_extraction.text import TfidfVectorizer

    # As the TF-IDF baseline: word 1-2 grams, sublinear tf, one-character words kept. Fitted on all texts: it sees
    # no labels, so the folds stay out-of-fold.
    for min_df in (2, 1):
        try:
            vectorizer = TfidfVectorizer(
                ngram_range=(1, 2), sublinear_tf=True, min_df=min_df, token_pattern=r"(?u)\b\w+\b"
            )
            return vectorizer.fit_transform(texts)
        except ValueError:  # no terms remain at min_df=2 on tiny data
            continue
    raise DataError("the texts hold no words for TF-IDF; check --text-column or use --features embeddings")


def _targets(dataset) -> np.ndarray:
    """Class ids ``(n,)`` in ``classes`` order, or for label sets a 0/1 matrix ``(n, n_labels)``."""
    from .decision import multi_hot

    if dataset.multi_label:
        return multi_hot(dataset.labels, dataset.classes)
    index = {label: k for k, label in enumerate(dataset.classes)}
    return np.array([index[label] for label in dataset.labels], dtype=np.int64)


def _splits(dataset, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    import warnings

    from sklearn.model_selection import KFold, StratifiedKFold

    if dataset.multi_label:
        return list(KFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(dataset))))
    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits": noted already
        warnings.simplefilter("ignore", UserWarning)
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(dataset)), _targets(dataset)))


def _oof_logreg(x, dataset, splits) -> tuple[np.ndarray, float]:
    """Out-of-fold probabilities ``(n, n_labels)`` of a logistic regression (one-vs-rest for label sets), at the
    regularization strength of :data:`C_GRID` whose out-of-fold probabilities have the lowest log-loss; and that C.

    cleanlab needs probabilities that mean what they say: a fixed C under-fits TF-IDF (every probability near the
    prior) or over-fits a few hundred rows, and both hide the planted errors.
    """
    y = _targets(dataset)
    best = None
    for c in C_GRID:
        probs = _oof_logreg_at(x, dataset, splits, c)
        loss = _log_loss(y, probs, dataset.multi_label)
        logger.debug("logistic regression C=%g: out-of-fold log-loss %.4f", c, loss)
        if best is None or loss < best[0]:
            best = (loss, probs, c)
    return best[1], best[2]


def _log_loss(y: np.ndarray, probs: np.ndarray, multi_label: bool) -> float:
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    if multi_label:  # mean binary log-loss over the (row, label) cells
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def _oof_logreg_at(x, dataset, splits, c: float) -> np.ndarray:
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y, k = _targets(dataset), len(dataset.classes)
    probs = np.zeros((len(dataset), k), dtype=np.float64)
    for train_idx, test_idx in splits:
        regression = LogisticRegression(C=c, max_iter=1000)
        estimator = regression if _sparse(x) else make_pipeline(StandardScaler(), regression)
        if dataset.multi_label:
            with warnings.catch_warnings():  # a label absent from a fold's training rows: predicted never
                warnings.simplefilter("ignore", UserWarning)
                model = OneVsRestClassifier(estimator).fit(x[train_idx], y[train_idx])
            probs[test_idx] = model.predict_proba(x[test_idx])
        else:
            model = estimator.fit(x[train_idx], y[train_idx])
            # A class missing from a fold's training rows gets probability 0 there.
            probs[np.ix_(test_idx, model.classes_)] = model.predict_proba(x[test_idx])
    return probs


def _oof_fine_tune(dataset, splits, model_name_or_path, train_config, seed: int) -> np.ndarray:
    """Out-of-fold probabilities of a bertfit model fine-tuned on each fold's other rows."""
    from .config import TrainConfig
    from .model import TextClassifier

    base = (train_config or TrainConfig()).to_dict()
    config = TrainConfig.from_dict({**base, "output_dir": None, "baselines": False, "seed": seed})
    column = {label: k for k, label in enumerate(dataset.classes)}
    probs = np.zeros((len(dataset), len(column)), dtype=np.float64)
    for fold, (train_idx, test_idx) in enumerate(splits, 1):
        logger.info("fold %d/%d: fine-tuning on %d rows", fold, len(splits), len(train_idx))
        part = dataset.subset(train_idx)
        clf = TextClassifier(model_name_or_path, config=config).fit(part.texts, part.labels)
        columns = [column[label] for label in clf.labels]
        probs[np.ix_(test_idx, columns)] = clf.predict_proba([dataset.texts[i] for i in test_idx])
    return probs


def _sparse(x) -> bool:
    return hasattr(x, "tocsr")


# -- confident learning --------------------------------------------------------------------------------------------


def _find_label_issues(cleanlab, dataset, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's issue mask ``(n,)`` and label-quality scores ``(n,)``."""
    targets = _targets(dataset)
    if dataset.multi_label:
        labels = [np.flatnonzero(row).tolist() for row in targets]  # cleanlab takes lists of class ids
        issue = cleanlab.multilabel_classification.filter.find_label_issues(labels, probs, n_jobs=1)
        quality = cleanlab.multilabel_classification.rank.get_label_quality_scores(labels, probs)
    else:
        issue = cleanlab.filter.find_label_issues(targets, probs, n_jobs=1)
        quality = cleanlab.rank.get_label_quality_scores(targets, probs)
    return np.asarray(issue, dtype=bool), np.asarray(quality, dtype=np.float64)


def _suggested(probs: np.ndarray, dataset) -> list:
    labels = dataset.classes
    if dataset.multi_label:
        return [tuple(labels[k] for k in np.flatnonzero(row >= 0.5)) for row in probs]
    return [labels[k] for k in probs.argmax(axis=1)]


# -- duplicates ----------------------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """``text`` case-folded, punctuation and symbols turned into spaces, whitespace collapsed; a text of
    punctuation only stays itself (stripped), so that "!!!" and "???" do not count as one text.

    >>> normalize_text("  The FILM, was   good!! ")
    'the film was good'
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    words = "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in folded).split()
    return " ".join(words) or re.sub(r"\s+", " ", text.strip())


def _codes(values: Sequence) -> np.ndarray:
    import pandas as pd

    return pd.factorize(pd.Series(list(values), dtype=object))[0]


def conflicting_duplicates(texts: Sequence[str], labels: Sequence) -> list[np.ndarray]:
    """Groups of positions whose texts are equal after :func:`normalize_text` but whose labels (sets) differ, in
    order of first appearance.

    >>> [g.tolist() for g in conflicting_duplicates(["Good film", "good film!", "bad"], ["pos", "neg", "neg"])]
    [[0, 1]]
    """
    import pandas as pd

    frame = pd.DataFrame({"text": _codes([normalize_text(t) for t in texts]), "label": _codes(labels)})
    kinds = frame.groupby("text")["label"].nunique()
    conflicting = kinds.index[kinds.to_numpy() > 1]
    groups = frame[frame["text"].isin(conflicting)].groupby("text", sort=False).groups  # index labels = positions
    return [np.sort(np.asarray(positions, dtype=np.int64)) for positions in groups.values()]


def near_duplicate_pairs(
    x, labels: Sequence, threshold: float = 0.95, exclude: Sequence | None = None, chunk_cells: int = 1 << 24
) -> list[tuple[int, int, float]]:
    """For each row, its most similar row (cosine of the feature rows) with a different label, when the similarity
    reaches ``threshold``: ``(i, j, cosine)`` sorted by row.

    The search is exact and brute force, ``chunk_cells`` similarities at a time (memory bounded: 64 MiB of float32
    by default; time grows with rows squared).

    Args:
        x: Features, shape ``(n, dim)``, dense or sparse.
        labels: One label (or hashable label set) per row.
        threshold: Lowest cosine similarity that counts.
        exclude: One key per row; rows with an equal key are not compared (e.g. the normalized texts, whose exact
            conflicts are reported on their own).
        chunk_cells: Most similarities computed at once.
    """
    from sklearn.preprocessing import normalize

    n = x.shape[0]
    unit = normalize(x) if _sparse(x) else normalize(np.asarray(x, dtype=np.float32))
    label_codes, keys = _codes(labels), _codes(exclude) if exclude is not None else np.arange(n)
    step = max(1, chunk_cells // max(n, 1))
    pairs = []
    for first in range(0, n, step):
        block = slice(first, min(n, first + step))
        sims = unit[block] @ unit.T  # (block, n)
        sims = sims.toarray() if _sparse(sims) else np.asarray(sims)
        same = (label_codes[block, None] == label_codes[None, :]) | (keys[block, None] == keys[None, :])
        sims[same] = -np.inf  # the row itself has its own label
        best = sims.argmax(axis=1)
        for i, j in enumerate(best, first):
            cosine = float(sims[i - first, j])
            if cosine >= threshold:
                pairs.append((i, int(j), min(cosine, 1.0)))
    return pairs


def _near_pairs(x, dataset, similarity: float, notes: list[str]) -> list[tuple[int, int, float]]:
    if len(dataset) > MAX_NEAR_DUPLICATE_ROWS:
        notes.append(f"near-duplicate search skipped: {len(dataset):,} rows > {MAX_NEAR_DUPLICATE_ROWS:,}")
        return []
    # Exact (normalized) duplicates are left to their own check.
    return near_duplicate_pairs(x, dataset.labels, similarity, [normalize_text(t) for t in dataset.texts])


# -- the ranked rows -----------------------------------------------------------------------------------------------


def _issue_rows(result: AuditResult, label_sep: str) -> list[dict[str, Any]]:
    kinds: dict[int, list[str]] = {int(i): ["label"] for i in np.flatnonzero(result.label_issue)}
    related: dict[int, str] = {}
    for group in result.conflict_groups:
        for i in group:
            kinds.setdefault(int(i), []).append("conflicting_duplicate")
            related[int(i)] = _related(result.rows[[j for j in group if j != i]])
    similarity: dict[int, float] = {}
    for i, j, cosine in result.near_pairs:
        kinds.setdefault(i, []).append("near_duplicate")
        related[i] = ";".join(filter(None, [related.get(i), str(result.rows[j])]))
        similarity[i] = cosine
    order = sorted(kinds, key=lambda i: (result.quality[i], result.rows[i]))
    return [
        {
            "rank": rank,
            "row": int(result.rows[i]),
            "text": result.texts[i],
            "given_label": _label_text(result.given[i], label_sep),
            "suggested_label": _label_text(result.suggested[i], label_sep),
            "quality": round(float(result.quality[i]), 6),
            "issue": ";".join(kinds[i]),
            "related_rows": related.get(i, ""),
            "similarity": round(similarity[i], 4) if i in similarity else "",
        }
        for rank, i in enumerate(order, 1)
    ]


def _related(rows: np.ndarray) -> str:
    shown = ";".join(str(r) for r in rows[:_RELATED_SHOWN])
    return shown + (f";...(+{len(rows) - _RELATED_SHOWN} more)" if len(rows) > _RELATED_SHOWN else "")


def _label_text(label, label_sep: str) -> str:
    return label_sep.join(label) if isinstance(label, tuple) else str(label)


# -- output --------------------------------------------------------------------------------------------------------


def _write(result: AuditResult, output_dir: Path, overwrite: bool) -> None:
    from .files import atomic_directory

    with atomic_directory(output_dir, overwrite) as staging:
        with open(staging / ISSUES_FILE, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(result.issues)
        (staging / HTML_FILE).write_text(_html(result), encoding="utf-8")
    result.output_dir = str(output_dir)


def _counts(result: AuditResult) -> dict[str, int]:
    kinds = [kind for row in result.issues for kind in row["issue"].split(";")]
    return {
        "rows audited": len(result.rows),
        "label issues": int(result.label_issue.sum()),
        "conflicting duplicate groups": len(result.conflict_groups),
        "near-duplicate rows": kinds.count("near_duplicate"),
        "rows flagged": len(result.issues),
    }


def format_audit(result: AuditResult, top: int = 5) -> str:
    """What ``bertfit audit`` prints: the counts, the ``top`` lowest-quality flagged rows and where the files went."""
    counts = _counts(result)
    lines = [
        f"Audited {counts['rows audited']:,} rows of {result.source} in {result.seconds:.1f} s ({result.method}; "
        f"out-of-fold accuracy {result.oof_accuracy:.4f}).",
        f"  label issues (cleanlab)        {counts['label issues']:,}",
        f"  conflicting duplicate groups   {counts['conflicting duplicate groups']:,}",
        f"  near-duplicate rows            {counts['near-duplicate rows']:,}",
        f"  rows flagged in all            {counts['rows flagged']:,}",
    ]
    if result.issues:
        lines.append(f"\nLowest label quality first (top {min(top, len(result.issues))}):")
        lines.append(f"  {'row':>7}  {'quality':>7}  {'given':<14}{'suggested':<14}{'issue':<24}text")
        for row in result.issues[:top]:
            text = row["text"] if len(row["text"]) <= 60 else row["text"][:57] + "..."
            lines.append(
                f"  {row['row']:>7}  {row['quality']:>7.4f}  {row['given_label']:<14}{row['suggested_label']:<14}"
                f"{row['issue']:<24}{text}"
            )
    lines.extend(f"note: {note}" for note in result.notes)
    if result.output_dir:
        lines.append(f"\nWrote {Path(result.output_dir) / ISSUES_FILE} and {Path(result.output_dir) / HTML_FILE}")
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem;line-height:1.45}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}th,td{border:1px solid #ccc;padding:.25rem .55rem;
vertical-align:top;text-align:left}th{background:#f3f3f3}td.n{text-align:right}.muted{color:#666;font-size:.9rem}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem}
.card b{display:block;font-size:1.5rem}
"""


def _html(result: AuditResult) -> str:
    e = html.escape
    cards = "".join(f'<div class="card">{e(name)}<b>{n:,}</b></div>' for name, n in _counts(result).items())
    notes = "".join(f"<p>note: {e(note)}</p>" for note in result.notes)
    shown = result.issues[:_HTML_ROWS]
    more = (
        f" (the first {_HTML_ROWS:,} of {len(result.issues):,}; all in {ISSUES_FILE})"
        if len(shown) < len(result.issues)
        else ""
    )
    header = "".join(f"<th>{e(c)}</th>" for c in CSV_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f'<td class="{_css_class(row[c])}">{e(str(row[c]))}</td>' for c in CSV_COLUMNS) + "</tr>"
        for row in shown
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>bertfit audit: {e(result.source)}'
        f"</title><style>{_CSS}</style></head>\n<body>\n<h1>bertfit label audit</h1>"
        f'<p class="muted">{e(result.source)}: {len(result.rows):,} rows, {len(result.labels)} labels; '
        f"{e(result.method)}, out-of-fold accuracy {result.oof_accuracy:.4f}; {result.seconds:.1f} s.</p>"
        f'<div class="cards">{cards}</div>{notes}'
        f"<h2>Flagged rows, lowest label quality first{e(more)}</h2>"
        '<p class="muted">row: 0-based data row of the input file (header not counted). quality: cleanlab\'s '
        "label-quality score, the out-of-fold probability of the given label (for label sets cleanlab's aggregate "
        "over the labels); low means likely mislabeled. issue: "
        "label (cleanlab's find_label_issues), conflicting_duplicate (the same text after normalizing case, spaces "
        "and punctuation, with another label), near_duplicate (cosine similarity at least the threshold, another "
        "label). Some flags are hard or ambiguous texts rather than errors: review before relabelling.</p>"
        f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>\n</body></html>\n"
    )


def _css_class(value) -> str:
    return "n" if isinstance(value, (int, float)) else ""
