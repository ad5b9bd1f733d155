"""Survival tables in, validated arrays out: time, event, features (clinical columns and slide embeddings).

A slide embedding is the mean over tiles of a patch store's ``features`` array (N tiles, D), matched
to table rows by a ``slide`` column equal to the store's stem (``<slide>.zarr``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError

__all__ = ["SurvivalData", "Standardizer", "read_table", "survival_data", "features_for", "slide_embeddings",
           "check_survival", "EMBEDDING_PREFIX"]

EMBEDDING_PREFIX = "emb_"
MIN_EVENTS = 5


@dataclass(frozen=True)
class SurvivalData:
    """One row per patient.

    Attributes
    ----------
    ids : (n,) str
    time : (n,) float64, event or censoring time in the table's units
    event : (n,) bool, True where the event was observed
    features : (n, d) float64
    feature_names : tuple of str, length d
    """

    ids: np.ndarray
    time: np.ndarray
    event: np.ndarray
    features: np.ndarray
    feature_names: tuple[str, ...]

    def subset(self, rows: np.ndarray) -> SurvivalData:
        return SurvivalData(self.ids[rows], self.time[rows], self.event[rows], self.features[rows],
                            self.feature_names)


@dataclass(frozen=True)
class Standardizer:
    """Per-feature mean and standard deviation, fitted on training rows only (constant columns keep sd 1)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> Standardizer:
        mean = features.mean(axis=0)
        std = features.std(axis=0)
        return cls(mean, np.where(std > 0, std, 1.0))

    def transform(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) / self.std


def read_table(path: str | Path):
    """A CSV as a pandas DataFrame, or a one-line error naming the file."""
    import pandas as pd

    path = Path(path)
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise WsiHccError(f"{path}: table not found; pass an existing CSV with --table") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise WsiHccError(f"{path}: cannot read the CSV ({str(exc).splitlines()[0]})") from None


def _numeric_column(table, column: str, where: str, what: str, text_fix: str = "encode categories as numbers"
                    ) -> np.ndarray:
    import pandas as pd

    if column not in table.columns:
        raise WsiHccError(f"{where}: no column '{column}' (columns: {', '.join(map(str, table.columns))}); "
                          f"name the {what} column that exists")
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(np.isnan(values))
    filled = table[column].notna().to_numpy()
    if what == "feature" and bad.size and filled.any() and np.isnan(values[filled]).all():
        # A text column (ids, names, categories) among the features: the fix is choosing columns, not rows.
        shown = table[column].dropna().iloc[0]
        raise WsiHccError(f"{where}: column '{column}' holds text ({shown!r}), not numbers; {text_fix}")
    if bad.size:
        shown = table[column].iloc[bad[0]]
        kind = "is empty" if pd.isna(shown) else f"is not a number ({shown!r})"
        raise WsiHccError(f"{where}: column '{column}' row {bad[0] + 2} {kind}; fill or drop the {bad.size} "
                          f"such row(s) (encode categories as numbers)")
    return values


def check_survival(time: np.ndarray, event: np.ndarray, where: str, time_col: str = "time",
                   event_col: str = "event", min_events: int = MIN_EVENTS) -> None:
    """Raise a one-line error unless times are positive-or-zero, events 0/1 and events are enough."""
    if np.any(time < 0):
        raise WsiHccError(f"{where}: column '{time_col}' has negative times (row {int(np.argmax(time < 0)) + 2}); "
                          f"times are durations from treatment")
    if not np.all(np.isin(event, (0, 1))):
        bad = event[~np.isin(event, (0, 1))][0]
        raise WsiHccError(f"{where}: column '{event_col}' must be 0 (censored) or 1 (event), found {bad:g}")
    if int(event.sum()) < min_events:
        raise WsiHccError(f"{where}: only {int(event.sum())} events in '{event_col}'; a survival model needs at "
                          f"least {min_events}")


def _check_one_row_per_patient(ids: np.ndarray, where: str, id_col: str | None) -> None:
    """Two rows of one patient would land in different folds: the model would be tested on a patient
    it was trained on."""
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        k = int(np.argmax(counts > 1))
        lines = [str(int(i) + 2) for i in np.flatnonzero(ids == values[k])[:3]]  # +2: header, 1-based
        raise WsiHccError(f"{where}: patient '{values[k]}' ({id_col}) has {counts[k]} rows (lines "
                          f"{', '.join(lines)}); a survival table has one row per patient: merge them, or pass "
                          "--id with a column that is unique per patient")


def slide_embeddings(stores: list[str | Path]) -> dict[str, np.ndarray]:
    """Slide stem -> mean tile feature (D,), float64, from patch stores or folders of ``*.zarr`` stores."""
    import zarr

    from wsi_hcc.store.finder import find_stores, shared_features

    paths = find_stores(stores)
    shared_features(paths)  # one model made them all, or a one-line error naming the odd store
    embeddings: dict[str, np.ndarray] = {}
    for path in paths:
        try:
            group = zarr.open_group(str(path), mode="r")
            features = np.asarray(group["features"][...], dtype=np.float64)
        except (FileNotFoundError, KeyError):
            raise WsiHccError(f"{path}: no 'features' array; run wsi-hcc features on this store first") from None
        if features.ndim != 2 or features.shape[0] == 0:
            raise WsiHccError(f"{path}: 'features' must be (tiles, D) with at least one tile, got {features.shape}")
        embeddings[path.name.removesuffix(".zarr")] = features.mean(axis=0)
    widths = {value.shape[0] for value in embeddings.values()}
    if len(widths) > 1:
        raise WsiHccError(f"{stores[0]}: stores have features of different widths {sorted(widths)}; use stores "
                          f"from one feature model")
    return embeddings


def survival_data(table, where: str, time_col: str, event_col: str, features: list[str] | None,
                  id_col: str | None = None, embeddings: dict[str, np.ndarray] | None = None,
                  slide_col: str = "slide", require_outcome: bool = True, min_events: int = MIN_EVENTS,
                  require_features: bool = True) -> SurvivalData:
    """Validated arrays from a table (pandas DataFrame read from ``where``).

    ``features`` None takes every column except time, event, id and slide. Embeddings, when given,
    are appended as ``emb_0 .. emb_{D-1}`` matched on ``slide_col``. With ``require_outcome`` False
    (prediction) missing time/event columns give NaN times and False events. ``min_events``: fewer
    observed events is an error (when the outcome is required).
    """
    n = len(table)
    if n == 0:
        raise WsiHccError(f"{where}: the table has no rows")
    has_outcome = time_col in table.columns and event_col in table.columns
    if require_outcome or has_outcome:
        time = _numeric_column(table, time_col, where, "time")
        event = _numeric_column(table, event_col, where, "event")
        check_survival(time, event, where, time_col, event_col, min_events if require_outcome else 0)
    else:
        time, event = np.full(n, np.nan), np.zeros(n)
    if id_col is not None and id_col not in table.columns:
        raise WsiHccError(f"{where}: no id column '{id_col}'; pass --id with an existing column")
    ids = (table[id_col].astype(str).to_numpy() if id_col is not None else np.array([str(i) for i in range(n)]))
    if require_outcome:
        _check_one_row_per_patient(ids, where, id_col)
    text_fix = "encode categories as numbers"
    if features is None:
        text_fix = ("every column but time, event, --id and slide is a feature without --features: name it with --id "
                    "if it identifies patients, or list the numeric feature columns with --features")
        skip = {time_col, event_col, id_col, slide_col}
        features = [str(c) for c in table.columns if c not in skip]
        if embeddings is not None:
            features = [c for c in features if not str(c).startswith(EMBEDDING_PREFIX)]
    columns = [_numeric_column(table, name, where, "feature", text_fix) for name in features]
    names = list(features)
    if embeddings is not None:
        if slide_col not in table.columns:
            raise WsiHccError(f"{where}: embeddings need a '{slide_col}' column naming each row's store stem")
        missing = [s for s in table[slide_col].astype(str) if s not in embeddings]
        if missing:
            raise WsiHccError(f"{where}: no patch store for slide '{missing[0]}' ({len(missing)} rows); add "
                              f"{missing[0]}.zarr to --embeddings or drop the row")
        matrix = np.stack([embeddings[s] for s in table[slide_col].astype(str)])
        columns.extend(matrix.T)
        names.extend(f"{EMBEDDING_PREFIX}{i}" for i in range(matrix.shape[1]))
    if not names and require_features:
        raise WsiHccError(f"{where}: no feature columns; pass --features or --embeddings")
    matrix = np.column_stack(columns).astype(np.float64) if names else np.empty((n, 0))
    return SurvivalData(ids, time, event.astype(bool), matrix, tuple(names))


def features_for(table, where: str, feature_names: tuple[str, ...], embeddings: dict[str, np.ndarray] | None,
                 slide_col: str = "slide") -> np.ndarray:
    """The (n, d) features a stored model expects, in its order (prediction on new tables)."""
    clinical = [name for name in feature_names if not name.startswith(EMBEDDING_PREFIX)]
    wants_embeddings = len(clinical) < len(feature_names)
    if wants_embeddings and embeddings is None:
        raise WsiHccError(f"{where}: the model uses slide embeddings; pass the patch stores with --embeddings")
    data = survival_data(table, where, "\0time", "\0event", clinical, None,
                         embeddings if wants_embeddings else None, slide_col, require_outcome=False)
    if data.features.shape[1] != len(feature_names):
        raise WsiHccError(f"{where}: embeddings have {data.features.shape[1] - len(clinical)} dimensions, the model "
                          f"expects {len(feature_names) - len(clinical)}; use stores from the same feature model")
    return data.features
