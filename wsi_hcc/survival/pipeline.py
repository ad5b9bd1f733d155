"""Survival runs end to end: table in, run folder out (metrics.json, risks.csv, km.png, nomogram.png, model/).

Cross-validation folds are stratified by event. In each fold the model, the standardisation, the
risk-group cut-offs and the Breslow baseline are fitted on the training patients only and applied
unchanged to the held-out ones. The final model is refitted on every patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_hcc.errors import OutputError, WsiHccError
from wsi_hcc.survival.bundle import SurvivalModel, load_model, save_model
from wsi_hcc.survival.config import SurvivalConfig
from wsi_hcc.survival.cox import fit_breslow, fit_cox
from wsi_hcc.survival.data import SurvivalData, features_for, read_table, slide_embeddings, survival_data
from wsi_hcc.survival.evaluation import evaluate_risks
from wsi_hcc.survival.groups import fit_cutoffs
from wsi_hcc.survival.nomogram import fit_nomogram, nomogram_figure
from wsi_hcc.survival.plots import km_figure
from wsi_hcc.utils.atomic import atomic_write_bytes, atomic_write_json, csv_bytes, fresh_partial_dir, publish_dir
from wsi_hcc.utils.progress import Progress, silent_progress
from wsi_hcc.utils.runs import provenance
from wsi_hcc.viz.figures import figure_png

__all__ = ["DataSpec", "TrainReport", "fit_model", "event_folds", "cross_validate", "run_survival_training",
           "run_prediction", "run_km"]


@dataclass(frozen=True)
class DataSpec:
    """Where the data come from: the table, its columns, and optional patch stores for slide embeddings."""

    table: str
    time_col: str
    event_col: str
    features: tuple[str, ...] | None = None
    id_col: str | None = None
    embeddings: tuple[str, ...] = ()
    slide_col: str = "slide"
    time_label: str = "time"

    def to_json(self) -> dict:
        return {"table": self.table, "time_col": self.time_col, "event_col": self.event_col,
                "features": None if self.features is None else list(self.features), "id_col": self.id_col,
                "embeddings": list(self.embeddings), "slide_col": self.slide_col, "time_label": self.time_label}


@dataclass(frozen=True)
class TrainReport:
    out_dir: Path
    metrics: dict
    model_dir: Path


def fit_model(data: SurvivalData, config: SurvivalConfig, seed: int) -> SurvivalModel:
    """Model, Breslow baseline and risk-group cut-offs, all from ``data`` (the training patients) only."""
    if config.model == "cox":
        predictor = fit_cox(data, config.cox)
    else:
        from wsi_hcc.survival.deepsurv import fit_deepsurv

        predictor = fit_deepsurv(data, config.deepsurv, seed)
    risk = predictor.log_hazard(data.features)
    return SurvivalModel(config.model, predictor, fit_breslow(risk, data.time, data.event),
                         fit_cutoffs(risk, data.time, data.event, config.groups))


def event_folds(event: np.ndarray, folds: int, seed: int,
                groups: Sequence[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) of ``folds`` event-stratified folds; with ``groups`` (a patient per row),
    a patient's rows stay in one fold."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    event = np.asarray(event)
    if event.sum() < folds:
        raise WsiHccError(f"{folds} folds need at least {folds} events, the table has {int(event.sum())}; "
                          f"lower --folds")
    if groups is not None and len(set(groups)) < folds:
        raise WsiHccError(f"{folds} folds need at least {folds} patients, there are {len(set(groups))}; "
                          "lower --folds")
    if groups is None:
        return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(event.size),
                                                                                   event.astype(int)))
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(event.size), event.astype(int), groups=list(groups)))


def cross_validate(data: SurvivalData, config: SurvivalConfig,
                   progress: Progress | None = None) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """(metrics, out-of-fold risks, groups, fold index) over ``config.folds`` event-stratified folds."""
    progress = progress or silent_progress()
    risk = np.full(data.time.size, np.nan)
    groups = np.empty(data.time.size, dtype=object)
    fold_of = np.full(data.time.size, -1)
    per_fold = []
    for fold, (train_rows, test_rows) in enumerate(event_folds(data.event, config.folds, config.seed)):
        train, test = data.subset(train_rows), data.subset(test_rows)
        if train.event.sum() < 2 or test.event.sum() < 1:
            raise WsiHccError(f"fold {fold}: too few events to fit and evaluate; lower --folds")
        model = fit_model(train, config, config.seed + fold)
        test_risk = model.log_hazard(test.features)
        risk[test_rows], groups[test_rows], fold_of[test_rows] = test_risk, model.cutoffs.label(test_risk), fold
        metrics = evaluate_risks(test.time, test.event, test_risk, train.time, train.event,
                                 survival_fn=lambda rows, times, r=test_risk, m=model: m.baseline.survival_at(
                                     r[rows], times), auc_times=config.auc_times)
        metrics["fold"], metrics["cutoffs"] = fold, model.cutoffs.to_json()
        per_fold.append(metrics)
        progress.message(f"fold {fold}: C-index {metrics['c_index_harrell']:.3f} (Harrell), "
                     f"{metrics['c_index_uno']:.3f} (Uno)")
    summary = {}
    for key in ("c_index_harrell", "c_index_uno", "integrated_brier_score"):
        values = [m[key] for m in per_fold if m.get(key) is not None]
        summary[key] = {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1))} if values else None
    pooled = evaluate_risks(data.time, data.event, risk, data.time, data.event, auc_times=config.auc_times,
                            bootstrap=config.bootstrap, seed=config.seed)
    return {"folds": per_fold, "fold_mean": summary, "pooled_out_of_fold": pooled}, risk, groups, fold_of


def _fmt(value) -> str:
    if isinstance(value, float | np.floating):
        return "" if np.isnan(value) else repr(float(value))
    return str(value)


def _load(spec: DataSpec, require_outcome: bool = True):
    table = read_table(spec.table)
    embeddings = slide_embeddings(list(spec.embeddings)) if spec.embeddings else None
    features = None if spec.features is None else list(spec.features)
    data = survival_data(table, spec.table, spec.time_col, spec.event_col, features, spec.id_col, embeddings,
                         spec.slide_col, require_outcome)
    return table, data


def _prepare_out(out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; choose another --out")
    try:
        tmp = fresh_partial_dir(out)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the output folder ({exc.strerror}); choose a writable --out") from None
    return out, tmp


def run_survival_training(spec: DataSpec, config: SurvivalConfig, out_dir: str | Path,
                          progress: Progress | None = None) -> TrainReport:
    """Cross-validate (if ``config.folds`` > 1), refit on all patients, write the run folder."""
    table, data = _load(spec)
    both = [n for n in (config.nomogram.covariates if config.nomogram else ()) if n in data.feature_names]
    if both:
        raise WsiHccError(f"--nomogram {', '.join(both)}: also features of the model, whose risk score already "
                          "holds them (their nomogram axes would have no range); give the nomogram covariates the "
                          "model does not use, or leave them out of --features")
    out, tmp = _prepare_out(out_dir)
    metrics: dict = {"model": config.model, "n": int(data.time.size), "events": int(data.event.sum()),
                     "features": list(data.feature_names)}
    if config.folds > 1:
        cv, risk, groups, fold_of = cross_validate(data, config, progress)
        metrics["cross_validation"] = cv
    final = fit_model(data, config, config.seed)
    train_risk = final.log_hazard(data.features)
    metrics["final_model_apparent"] = evaluate_risks(
        data.time, data.event, train_risk, data.time, data.event,
        survival_fn=lambda rows, times: final.baseline.survival_at(train_risk[rows], times),
        auc_times=config.auc_times, bootstrap=0 if config.folds > 1 else config.bootstrap, seed=config.seed)
    metrics["final_model_apparent"]["note"] = "on the training patients: optimistic"
    metrics["cutoffs"] = final.cutoffs.to_json()
    if config.folds == 1:
        risk, groups, fold_of = train_risk, final.cutoffs.label(train_risk), np.full(data.time.size, -1)
    figure, km = km_figure(data.time, data.event, groups, final.cutoffs.labels, spec.time_label,
                           "held-out risk groups" if config.folds > 1 else "risk groups (training patients)")
    atomic_write_bytes(tmp / "km.png", figure_png(figure))
    metrics["km"] = km.to_json()
    if config.nomogram is not None and config.nomogram.covariates:
        # The deep score enters as held-out risks when cross-validated, so its weight is not inflated
        # by the network's fit to its own training patients.
        names = list(config.nomogram.covariates)
        clinical = survival_data(table, spec.table, spec.time_col, spec.event_col, names).features
        final.nomogram = fit_nomogram(np.column_stack([risk, clinical]), ["risk score", *names], data.time,
                                      data.event, config.nomogram.survival_time, config.cox.penalizer)
        atomic_write_bytes(tmp / "nomogram.png", figure_png(nomogram_figure(final.nomogram, spec.time_label)))
        metrics["nomogram"] = {"covariates": ["risk score", *names], "coef": final.nomogram.coef.tolist(),
                               "survival_time": final.nomogram.survival_time}
    final.info = {"config": config.model_dump(mode="json"), "data": spec.to_json(), "n_train": int(data.time.size),
                  "events_train": int(data.event.sum())}
    save_model(final, tmp / "model")
    rows = [(i, _fmt(t), int(e), _fmt(r), g, "" if f < 0 else int(f))
            for i, t, e, r, g, f in zip(data.ids, data.time, data.event, risk, groups, fold_of)]
    atomic_write_bytes(tmp / "risks.csv", csv_bytes(["id", "time", "event", "risk", "group", "fold"], rows))
    metrics.update(provenance(config=config.model_dump(mode="json"), data=spec.to_json()))
    atomic_write_json(tmp / "metrics.json", metrics)
    publish_dir(tmp, out)
    return TrainReport(out, metrics, out / "model")


def run_prediction(model_dir: str | Path, spec: DataSpec, out_dir: str | Path) -> dict:
    """Risks and groups (stored cut-offs) for a new table; with its outcomes also metrics and km.png.

    Columns not named in ``spec`` (id, time, event) default to the training run's when the table has them.

    Censoring weights for Uno's C and the AUC come from the new table's own censoring distribution.
    """
    model = load_model(model_dir)
    table = read_table(spec.table)
    trained = model.info.get("data", {})
    id_col = spec.id_col
    if id_col is None and trained.get("id_col") in table.columns:
        id_col = trained["id_col"]
    time_col, event_col = spec.time_col or trained.get("time_col", ""), spec.event_col or trained.get("event_col", "")
    spec = DataSpec(spec.table, time_col, event_col, None, id_col, spec.embeddings,
                    trained.get("slide_col", spec.slide_col), trained.get("time_label", spec.time_label))
    embeddings = slide_embeddings(list(spec.embeddings)) if spec.embeddings else None
    features = features_for(table, spec.table, model.feature_names, embeddings, spec.slide_col)
    risk = model.log_hazard(features)
    labels = model.cutoffs.label(risk)
    outcome = survival_data(table, spec.table, spec.time_col, spec.event_col, [], spec.id_col, None,
                            spec.slide_col, require_outcome=False, require_features=False)
    ids = outcome.ids
    out, tmp = _prepare_out(out_dir)
    header, columns = ["id", "risk", "group"], [ids, [_fmt(r) for r in risk], labels]
    if model.nomogram is not None:
        clinical = survival_data(table, spec.table, "\0", "\0", list(model.nomogram.covariates[1:]), None, None,
                                 require_outcome=False, require_features=False).features
        values = np.column_stack([risk, clinical])
        header += ["nomogram_points", f"survival_at_{model.nomogram.survival_time:g}"]
        columns += [[_fmt(p) for p in model.nomogram.points(values).sum(axis=1)],
                    [_fmt(s) for s in model.nomogram.survival(values)]]
    result: dict = {"model": str(model_dir), "n": len(risk), "cutoffs": model.cutoffs.to_json(),
                    "groups": {g: int((labels == g).sum()) for g in model.cutoffs.labels}}
    if outcome.event.any():
        header[1:1] = ["time", "event"]
        columns[1:1] = [[_fmt(t) for t in outcome.time], outcome.event.astype(int)]
        result["metrics"] = evaluate_risks(outcome.time, outcome.event, risk, outcome.time, outcome.event,
                                           survival_fn=lambda rows, times: model.baseline.survival_at(risk[rows],
                                                                                                      times))
        if len(set(labels)) > 1:
            figure, km = km_figure(outcome.time, outcome.event, labels, model.cutoffs.labels, spec.time_label)
            atomic_write_bytes(tmp / "km.png", figure_png(figure))
            result["km"] = km.to_json()
    atomic_write_bytes(tmp / "risks.csv", csv_bytes(header, zip(*columns)))
    result.update(provenance(data=spec.to_json()))
    atomic_write_json(tmp / "metrics.json", result)
    publish_dir(tmp, out)
    return result


def run_km(table_path: str, time_col: str, event_col: str, group_col: str, out_png: str | Path,
           time_label: str = "time") -> dict:
    """Kaplan-Meier curves of a table's groups with the log-rank test, written to ``out_png``."""
    table = read_table(table_path)
    data = survival_data(table, table_path, time_col, event_col, [], None, None, min_events=1,
                         require_features=False)
    if group_col not in table.columns:
        raise WsiHccError(f"{table_path}: no group column '{group_col}'; pass --group with an existing column")
    if table[group_col].isna().any():
        raise WsiHccError(f"{table_path}: column '{group_col}' has empty cells; fill or drop those rows")
    figure, summary = km_figure(data.time, data.event, table[group_col].astype(str).to_numpy(), None, time_label)
    out_png = Path(out_png)
    if not out_png.parent.is_dir():
        raise OutputError(f"{out_png}: folder {out_png.parent} does not exist; create it or choose another --out")
    atomic_write_bytes(out_png, figure_png(figure))
    return summary.to_json()
