"""``wsi-hcc survival train | predict | km``: parse, call ``wsi_hcc.survival.pipeline``, report.

Heavy imports (torch, lifelines) happen inside the commands so ``--help`` stays instant. Library
errors are one line (``error: ...``, exit 2).
"""

from __future__ import annotations

import click

from wsi_hcc.cli.errors import OneLineCommand, OneLineErrors
from wsi_hcc.cli.options import renamed_option

__all__ = ["COMMANDS", "survival"]


def _columns(values: tuple[str, ...]) -> tuple[str, ...] | None:
    """Repeated and/or comma-separated column names; None when none were given."""
    names = tuple(name.strip() for value in values for name in value.split(",") if name.strip())
    return names or None


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


@click.group("survival", cls=OneLineErrors, epilog="""\b
Examples:
  wsi-hcc survival train --table tace.csv --time os_months --event death --features age,afp,bclc --out runs/os
  wsi-hcc survival predict --model runs/os/model --table external.csv --out runs/os_external
  wsi-hcc survival km --table runs/os/risks.csv --time time --event event --group group --out km.png""")
def survival():
    """Prognosis after TACE, ablation or resection: Cox and DeepSurv risk scores, risk groups, KM curves."""


@survival.command("train", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc survival train --table tace.csv --time os_months --event death --features age,afp,bclc --out runs/os
  wsi-hcc survival train --table tace.csv --time pfs --event progression --embeddings stores/ --id patient \\
      --config configs/survival/deepsurv_tace.yaml --nomogram age,bclc --out runs/pfs
  wsi-hcc survival train --table tace.csv --time os --event death --arch cox --groups fixed --threshold 0.5 \\
      --out runs/cox

\b
Writes OUT/metrics.json (Harrell's and Uno's C with bootstrap CIs, time-dependent AUC, integrated
Brier score, per fold), OUT/risks.csv (id, time, event, risk, group, fold: held-out risks when
cross-validated), OUT/km.png, OUT/nomogram.png (with --nomogram) and OUT/model/ (safetensors +
card.json; cut-offs fitted on training patients only).""")
@click.option("--table", required=True, type=click.Path(dir_okay=False), help="CSV, one row per patient.")
@click.option("--time", "time_col", required=True, help="Column of event or censoring times.")
@click.option("--event", "event_col", required=True, help="Column of event indicators (1 event, 0 censored).")
@click.option("--features", multiple=True, help="Feature columns, comma-separated or repeated (default: every "
              "other column; with --embeddings: none).")
@click.option("--embeddings", multiple=True, type=click.Path(exists=False), help="Patch store (<slide>.zarr with "
              "features) or folder of stores; the mean tile feature joins on the 'slide' column. Repeatable.")
@click.option("--id", "id_col", help="Patient id column for risks.csv (default: row number).")
@click.option("--slide-col", default="slide", show_default=True, help="Column naming each row's store stem.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML with a 'survival:' section, "
              "or a shipped one by name (survival/cox_nomogram).")
@click.option("--arch", "model", type=click.Choice(["deepsurv", "cox"]), help="Architecture (default deepsurv).")
@renamed_option("--model", "--arch", "model", type=click.Choice(["deepsurv", "cox"]))
@click.option("--folds", type=click.IntRange(1, 50), help="Cross-validation folds (1: none).")
@click.option("--groups", "group_method", type=click.Choice(["median", "tertiles", "optimal", "fixed"]),
              help="Risk-group cut-offs, fitted on training patients.")
@click.option("--threshold", type=float, help="Cut-off on the risk score for --groups fixed.")
@click.option("--nomogram", "nomogram_cols", multiple=True, help="Clinical covariates for a nomogram with the "
              "risk score (comma-separated or repeated).")
@click.option("--time-unit", default="time", show_default=True, help="Time axis label (e.g. months).")
@click.option("--bootstrap", type=click.IntRange(min=0), help="Bootstrap resamples for the C-index CIs.")
@click.option("--seed", type=click.IntRange(min=0), help="Seed for folds and training.")
def train(table, time_col, event_col, features, embeddings, id_col, slide_col, out_dir, config_path, model, folds,
          group_method, threshold, nomogram_cols, time_unit, bootstrap, seed):
    """Fit and cross-validate a survival model on a patient table (clinical columns and/or slide embeddings)."""
    from wsi_hcc.survival.config import load_survival_config
    from wsi_hcc.survival.pipeline import DataSpec, run_survival_training

    config = load_survival_config(config_path)
    overrides = {"model": model, "folds": folds, "groups.method": group_method, "groups.threshold": threshold,
                 "bootstrap": bootstrap, "seed": seed}
    nomogram = _columns(nomogram_cols)
    if nomogram:
        overrides["nomogram"] = {**(config.nomogram.model_dump() if config.nomogram else {}),
                                 "covariates": list(nomogram)}
    config = config.with_overrides(**overrides)
    columns = _columns(features)
    if columns is None and embeddings:
        columns = ()
    spec = DataSpec(table, time_col, event_col, columns, id_col, tuple(embeddings), slide_col, time_unit)
    from wsi_hcc.cli.progress import RichProgress

    with RichProgress() as progress:
        report = run_survival_training(spec, config, out_dir, progress=progress)
    metrics = report.metrics
    if "cross_validation" in metrics:
        pooled = metrics["cross_validation"]["pooled_out_of_fold"]
        low, high = pooled.get("c_index_harrell_ci95") or (None, None)
        mean = metrics["cross_validation"]["fold_mean"]
        line = (f"{config.folds}-fold CV: C-index {_fmt(mean['c_index_harrell']['mean'])} per fold (Harrell), "
                f"{_fmt(mean['c_index_uno']['mean'])} (Uno); pooled held-out {_fmt(pooled['c_index_harrell'])} "
                f"(95% CI {_fmt(low)}-{_fmt(high)})")
    else:
        line = f"apparent C-index {_fmt(metrics['final_model_apparent']['c_index_harrell'])} (training patients)"
    click.echo(f"{line}; log-rank p {metrics['km']['logrank_p']:.3g} -> {report.out_dir}")


@survival.command("predict", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc survival predict --model runs/os/model --table external.csv --out runs/os_external
  wsi-hcc survival predict --model runs/pfs/model --table new.csv --embeddings stores/ --id patient --out preds

\b
Writes OUT/risks.csv (id, risk, group from the stored cut-offs, never refitted; time and event when
the table has them) and OUT/metrics.json; with outcomes also OUT/km.png.""")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="model/ folder of a "
              "training run.")
@click.option("--table", required=True, type=click.Path(dir_okay=False), help="CSV with the model's feature columns.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--embeddings", multiple=True, help="Patch stores or folders (if the model uses slide embeddings).")
@click.option("--id", "id_col", help="Patient id column (default: the training run's, else row number).")
@click.option("--time", "time_col", help="Time column for evaluation (default: the training run's).")
@click.option("--event", "event_col", help="Event column for evaluation (default: the training run's).")
def predict(model_dir, table, out_dir, embeddings, id_col, time_col, event_col):
    """Risk scores and risk groups for new patients with a trained model."""
    from wsi_hcc.survival.pipeline import DataSpec, run_prediction
    from wsi_hcc.utils.words import counted

    spec = DataSpec(table, time_col or "", event_col or "", None, id_col, tuple(embeddings))
    result = run_prediction(model_dir, spec, out_dir)
    counts = ", ".join(f"{name} {count}" for name, count in result["groups"].items())
    line = f"{counted(result['n'], 'patient')} scored ({counts})"
    if "metrics" in result:
        line += f"; C-index {_fmt(result['metrics']['c_index_harrell'])} (Harrell)"
    click.echo(f"{line} -> {out_dir}")


@survival.command("km", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc survival km --table runs/os/risks.csv --time time --event event --group group --out km.png
  wsi-hcc survival km --table tace.csv --time os_months --event death --group bclc --time-unit months --out bclc.png""")
@click.option("--table", required=True, type=click.Path(dir_okay=False), help="CSV, one row per patient.")
@click.option("--time", "time_col", required=True, help="Column of event or censoring times.")
@click.option("--event", "event_col", required=True, help="Column of event indicators (1 event, 0 censored).")
@click.option("--group", "group_col", required=True, help="Column of group labels.")
@click.option("--out", "out_png", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option("--time-unit", default="time", show_default=True, help="Time axis label (e.g. months).")
def km(table, time_col, event_col, group_col, out_png, time_unit):
    """Kaplan-Meier curves per group with numbers at risk and the log-rank p-value."""
    from wsi_hcc.survival.pipeline import run_km

    summary = run_km(table, time_col, event_col, group_col, out_png, time_unit)
    groups = ", ".join(f"{g} n={n}" for g, n in zip(summary["groups"], summary["n"]))
    click.echo(f"{groups}; log-rank p {summary['logrank_p']:.3g} -> {out_png}")


COMMANDS = [survival]
