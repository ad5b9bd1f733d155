"""``wsi-hcc radiology ablation``: tumour, margin and ablation-zone features for local progression after ablation.

Attach with ``radiology.add_command(ablation)``. The table it writes goes into ``wsi-hcc survival
train`` (Cox or DeepSurv, nomogram). Heavy imports happen inside the command.
"""

from __future__ import annotations

from pathlib import Path

import click

from wsi_hcc.cli.errors import OneLineCommand
from wsi_hcc.cli.options import phantoms_or_cases
from wsi_hcc.cli.radiology import prepare_out, provenance

__all__ = ["COMMANDS", "ablation"]


def _case_rows(cases_csv: str, margin_mm: float, threshold, zone_phase, n_habitats: int, progress) -> list[dict]:
    import csv

    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.radiology import load_volume
    from wsi_hcc.radiology.ablation import ablation_features

    path = Path(cases_csv)
    if not path.is_file():
        raise WsiHccError(f"{path}: no such file; give --cases a CSV (columns: case, pre:PHASE, post:PHASE, tumour)")
    with path.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    columns = list(table[0]) if table else []
    pre_cols = [c for c in columns if c.startswith("pre:")]
    post_cols = [c for c in columns if c.startswith("post:")]
    if "case" not in columns or "tumour" not in columns or not pre_cols or not post_cols:
        raise WsiHccError(f"{path}: needs columns case, tumour, pre:PHASE and post:PHASE (one per phase); "
                          "optional ablation (zone mask), liver, *_label, time, event")
    progress.steps_planned(len(table), name="cases")
    rows = []
    for line, row in enumerate(table, start=2):
        where = f"{path.name} line {line}"
        empty = [c for c in ("case", "tumour", *pre_cols, *post_cols) if not (row.get(c) or "").strip()]
        if empty:
            raise WsiHccError(f"{where}: empty {', '.join(empty)}; fill every cell of these columns")

        def mask(column: str):
            volume = load_volume(path.parent / row[column])
            label = (row.get(f"{column}_label") or "").strip()
            values = volume.array == int(label) if label else volume.array != 0
            if not values.any():
                raise WsiHccError(f"{where}: the {column} mask {row[column]} is empty; check it and {column}_label")
            return volume.with_array(values)

        pre = {c[4:]: load_volume(path.parent / row[c]) for c in pre_cols}
        post = {c[5:]: load_volume(path.parent / row[c]) for c in post_cols}
        zone = mask("ablation") if (row.get("ablation") or "").strip() else None
        liver = mask("liver") if (row.get("liver") or "").strip() else None
        try:
            features, _ = ablation_features(pre, post, mask("tumour"), zone, zone_phase, threshold, margin_mm,
                                            n_habitats, liver=liver)
        except WsiHccError as exc:
            raise WsiHccError(f"{where}: {exc}") from None
        outcome = {k: row[k] for k in ("time", "event") if (row.get(k) or "").strip()}
        rows.append({"case": row["case"], **outcome, **features, "zone_from": "mask" if zone else "threshold"})
        progress.steps_done(1)
    if not rows:
        raise WsiHccError(f"{path}: no rows; add one row per case")
    return rows


@click.command("ablation", cls=OneLineCommand, epilog="""\b
Examples:
  wsi-hcc radiology ablation --phantoms 60 --out runs/ablation
  wsi-hcc survival train --table runs/ablation/features.csv --time time --event event --id case --arch cox \\
      --features margin_coverage,min_margin_mm --nomogram tumour_ml --out runs/ltp
  wsi-hcc radiology ablation --cases ablations.csv --margin-mm 5 --out runs/ablation_real

\b
--phantoms N: pre/post-ablation MR phantoms whose time to local progression depends on the share
of the 5 mm margin the ablation zone covers (radiology.ablation).
--cases CSV: one row per case, paths relative to the CSV; columns case, pre:PHASE and post:PHASE
  (one per phase; the first pre phase is the reference grid: register the others to it first),
  tumour (mask on the pre images), optional ablation (zone mask; else a threshold on the post
  phase --zone-phase, three-class Otsu by default, kept inside the optional liver mask), tumour_label,
  ablation_label, liver_label, time and event.
Writes OUT/features.csv (one row per case: margin geometry, first-order and GLCM features of
tumour, margin ring and zone, tumour habitats; time and event when given) and OUT/features.json.""")
@click.option("--phantoms", type=click.IntRange(8, 2000), help="Phantom cases. Either --phantoms or --cases.")
@click.option("--cases", "cases_csv", type=click.Path(dir_okay=False), help="CSV of cases (columns: see below).")
@click.option("--margin-mm", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Width of the margin ring around the tumour.")
@click.option("--ablation-threshold", "threshold", type=float,
              help="Zone = post-phase voxels above this value near the tumour (default: upper three-class Otsu "
              "threshold).")
@click.option("--zone-phase", help="Post-ablation phase the threshold applies to (default: the first).")
@click.option("--habitats", "n_habitats", type=click.IntRange(0, 8), default=3, show_default=True,
              help="Tumour habitats (k-means across the pre phases; 0: none).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Phantom seed.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
def ablation(phantoms, cases_csv, margin_mm, threshold, zone_phase, n_habitats, seed, out_dir):
    """Features of the tumour, its margin ring and the ablation zone from pre- and post-ablation images."""
    from wsi_hcc.cli.progress import RichProgress
    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.utils.atomic import atomic_write_csv, atomic_write_json, publish_dir

    phantoms_or_cases(phantoms, cases_csv, "ablations.csv")
    with RichProgress() as progress:
        if phantoms is not None:
            if margin_mm != 5.0 or threshold is not None or zone_phase:
                raise WsiHccError("--margin-mm, --ablation-threshold and --zone-phase apply to --cases only")
            from wsi_hcc.radiology.ablation import ablation_cohort

            rows = ablation_cohort(phantoms, seed=seed, progress=progress)
        else:
            rows = _case_rows(cases_csv, margin_mm, threshold, zone_phase, n_habitats, progress)
    tmp = prepare_out(out_dir)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    atomic_write_csv(tmp / "features.csv", columns, [{k: row.get(k, "") for k in columns} for row in rows])
    atomic_write_json(tmp / "features.json", {
        "cases": len(rows), "margin_mm": margin_mm, "threshold": threshold, "zone_phase": zone_phase,
        "source": "ablation_cohort" if phantoms else str(cases_csv), "seed": seed if phantoms else None,
        "columns": columns, **provenance(cases=cases_csv)})
    publish_dir(tmp, Path(out_dir))
    incomplete = sum(1 for row in rows if row["min_margin_mm"] < margin_mm)
    click.echo(f"{len(rows)} cases, {incomplete} with a margin under {margin_mm:g} mm, {len(columns)} columns "
               f"-> {out_dir}/features.csv")


COMMANDS = [ablation]
