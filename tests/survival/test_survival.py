"""Survival module: concordance against lifelines, the Cox likelihood against lifelines' Efron, cut-offs
fitted on training data only, model round trips, input errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from wsi_hcc.errors import ConfigError, WsiHccError
from wsi_hcc.survival import (
    CoxHead,
    DeepSurvNet,
    RiskCutoffs,
    SurvivalConfig,
    concordance_index,
    cox_partial_nll,
    fit_cox,
    fit_cutoffs,
    fit_model,
    km_figure,
    load_model,
    save_model,
    survival_data,
    uno_concordance,
)
from wsi_hcc.survival.config import DeepSurvConfig, GroupConfig, load_survival_config
from wsi_hcc.survival.groups import logrank_statistics


def _cohort(n=120, seed=0, n_features=3):
    """A table whose first feature raises the hazard; integer times (ties) and ~30% censoring."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features))
    event_time = rng.exponential(20 * np.exp(-0.8 * x[:, 0]))
    censor_time = rng.exponential(50, size=n)
    table = pd.DataFrame(x, columns=[f"f{i}" for i in range(n_features)])
    table["time"] = np.ceil(np.minimum(event_time, censor_time))
    table["event"] = (event_time <= censor_time).astype(int)
    table.insert(0, "patient", [f"P{i:03d}" for i in range(n)])
    return table


@pytest.mark.parametrize("seed", range(6))
def test_concordance_equals_lifelines_with_ties_and_censoring(seed):
    from lifelines.utils import concordance_index as lifelines_ci

    rng = np.random.default_rng(seed)
    n = 300
    time = rng.integers(1, 25, n).astype(float)  # many tied times
    event = rng.random(n) < 0.6
    risk = np.round(rng.normal(size=n) - 0.05 * time, 1)  # many tied risks
    ours = concordance_index(time, event, risk)
    assert abs(ours - lifelines_ci(time, -risk, event)) < 1e-9
    assert 0.5 < ours < 1  # the risk is informative: not a constant answer


def test_concordance_counts_censored_at_an_event_time_as_comparable():
    from lifelines.utils import concordance_index as lifelines_ci

    time, event = np.array([5.0, 5.0, 5.0, 7.0]), np.array([1, 0, 1, 0])
    for risk in (np.array([3.0, 1.0, 2.0, 0.0]), np.array([0.0, 1.0, 1.0, 2.0])):
        assert abs(concordance_index(time, event, risk) - lifelines_ci(time, -risk, event)) < 1e-12


def test_uno_equals_harrell_without_censoring_or_tied_times():
    rng = np.random.default_rng(3)
    time = rng.permutation(np.arange(1.0, 81.0))
    event = np.ones(80, dtype=bool)
    risk = -time + rng.normal(0, 20, 80)
    assert abs(uno_concordance(time, event, risk, time, event) - concordance_index(time, event, risk)) < 1e-6


def _tied_example():
    time = np.array([1, 2, 2, 2, 3, 4, 4, 5, 6, 6, 7, 8], dtype=float)
    event = np.array([1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1], dtype=bool)
    x = np.array([0.5, 1.2, -0.3, 0.8, 0.1, -1.0, 0.7, 0.0, -0.4, 1.5, -0.2, -0.9])
    return time, event, x


def test_efron_matches_lifelines_partial_likelihood_and_breslow_differs():
    from lifelines import CoxPHFitter

    time, event, x = _tied_example()
    fitter = CoxPHFitter().fit(pd.DataFrame({"x": x, "T": time, "E": event.astype(int)}), "T", "E")
    beta = float(fitter.params_["x"])
    log_hz = torch.as_tensor(beta * x, dtype=torch.float64)
    e, t = torch.as_tensor(event), torch.as_tensor(time)
    efron = float(cox_partial_nll(log_hz, e, t, "efron", "sum"))
    breslow = float(cox_partial_nll(log_hz, e, t, "breslow", "sum"))
    # lifelines' log-likelihood is Efron's partial likelihood; torchsurv computes ties in float32
    assert efron == pytest.approx(-fitter.log_likelihood_, rel=1e-5)
    assert abs(breslow - efron) > 1e-3


def test_cox_loss_rejects_a_batch_without_events():
    with pytest.raises(ValueError, match="at least one event"):
        cox_partial_nll(torch.zeros(3), torch.zeros(3, dtype=torch.bool), torch.arange(3.0))


def test_networks_give_one_log_hazard_per_input_and_train():
    time, event, _ = _tied_example()
    e, t = torch.as_tensor(event), torch.as_tensor(time, dtype=torch.float32)
    for module, x in ((DeepSurvNet(5, [8, 4], 0.1), torch.randn(12, 5)),
                      (CoxHead(16, hidden=8, dropout=0.1), torch.randn(12, 16, 3, 3)),
                      (CoxHead(16), torch.randn(12, 16))):
        out = module(x)
        assert out.shape == (12,) and torch.isfinite(out).all()
        cox_partial_nll(out, e, t).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


def test_logrank_search_statistic_equals_lifelines():
    from lifelines.statistics import logrank_test

    table = _cohort(150, seed=4)
    time, event = table["time"].to_numpy(), table["event"].to_numpy().astype(bool)
    splits = np.column_stack([table["f0"] > c for c in (-0.5, 0.0, 0.7)] + [table["f1"] > 0])
    ours = logrank_statistics(time, event, splits)
    for column, value in zip(splits.T, ours):
        theirs = logrank_test(time[column], time[~column], event[column], event[~column]).test_statistic
        assert value == pytest.approx(theirs, rel=1e-9)


@pytest.mark.parametrize("method", ["median", "tertiles", "optimal", "fixed"])
def test_cutoffs_are_fitted_on_training_risks_and_test_data_never_moves_them(method):
    table = _cohort(200, seed=1)
    config = GroupConfig(method=method, threshold=0.25 if method == "fixed" else None)
    train, test = table.iloc[:140], table.iloc[140:]
    fitted = fit_cutoffs(train["f0"], train["time"], train["event"].astype(bool), config)
    again = fit_cutoffs(train["f0"], train["time"], train["event"].astype(bool), config)
    assert fitted == again
    expected = {"median": [np.median(train["f0"])], "tertiles": list(np.quantile(train["f0"], [1 / 3, 2 / 3])),
                "fixed": [0.25]}.get(method)
    if expected is not None:
        assert np.allclose(fitted.cutoffs, expected)
    shifted = test["f0"].to_numpy() + 5  # every test patient far above the training risks
    assert set(fitted.label(shifted)) == {fitted.labels[-1]}
    assert np.array_equal(fitted.assign(test["f0"]), np.searchsorted(fitted.cutoffs, test["f0"], side="left"))
    assert RiskCutoffs.from_json(fitted.to_json()) == fitted


def test_optimal_cutoff_respects_the_minimum_group_fraction():
    table = _cohort(200, seed=2)
    cut = fit_cutoffs(table["f0"], table["time"], table["event"].astype(bool), GroupConfig(method="optimal",
                                                                                         min_fraction=0.3))
    share = (table["f0"] > cut.cutoffs[0]).mean()
    assert 0.3 <= share <= 0.7 and cut.logrank_statistic > 0


def test_cross_validation_cutoffs_come_from_each_folds_training_patients():
    from wsi_hcc.survival.pipeline import cross_validate, event_folds

    data = survival_data(_cohort(150, seed=5), "cohort.csv", "time", "event", ["f0", "f1"], "patient")
    config = SurvivalConfig(model="cox", folds=3, bootstrap=0)
    metrics, risk, groups, fold_of = cross_validate(data, config)
    for fold, (train_rows, test_rows) in enumerate(event_folds(data.event, 3, config.seed)):
        model = fit_model(data.subset(train_rows), config, config.seed + fold)
        assert metrics["folds"][fold]["cutoffs"] == model.cutoffs.to_json()
        assert list(groups[test_rows]) == list(model.cutoffs.label(risk[test_rows]))
        assert np.all(fold_of[test_rows] == fold)


@pytest.mark.parametrize("kind", ["cox", "deepsurv"])
def test_model_round_trip_gives_the_same_risks(tmp_path, kind):
    table = _cohort(100, seed=6)
    data = survival_data(table, "cohort.csv", "time", "event", ["f0", "f1", "f2"], "patient")
    config = SurvivalConfig(model=kind, deepsurv=DeepSurvConfig(epochs=20, hidden=[4]), groups={"method": "tertiles"})
    model = fit_model(data, config, 0)
    save_model(model, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert np.array_equal(loaded.log_hazard(data.features), model.log_hazard(data.features))
    assert loaded.cutoffs == model.cutoffs and loaded.feature_names == ("f0", "f1", "f2")
    assert np.array_equal(loaded.baseline.survival, model.baseline.survival)
    assert not list(tmp_path.glob("model/*.p*k*"))  # nothing pickled


def test_loading_detects_changed_weights(tmp_path):
    data = survival_data(_cohort(80, seed=7), "cohort.csv", "time", "event", ["f0"], "patient")
    save_model(fit_model(data, SurvivalConfig(model="cox"), 0), tmp_path / "m")
    weights = tmp_path / "m" / "weights.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1
    weights.write_bytes(bytes(blob))
    with pytest.raises(WsiHccError, match="checksum"):
        load_model(tmp_path / "m")


def test_deepsurv_is_deterministic_and_standardises_on_training_rows():
    from wsi_hcc.survival import fit_deepsurv

    data = survival_data(_cohort(120, seed=8), "cohort.csv", "time", "event", ["f0", "f1"], "patient")
    config = DeepSurvConfig(epochs=15, hidden=[4])
    first, second = fit_deepsurv(data, config, seed=3), fit_deepsurv(data, config, seed=3)
    assert np.array_equal(first.log_hazard(data.features), second.log_hazard(data.features))
    assert 1 <= first.best_epoch <= 15
    assert not np.allclose(first.standardizer.mean, data.features.mean(axis=0))  # validation rows left out


def test_km_log_rank_p_equals_lifelines():
    from lifelines.statistics import logrank_test

    table = _cohort(160, seed=9)
    group = np.where(table["f0"] > 0, "high", "low")
    figure, summary = km_figure(table["time"], table["event"], group, ["low", "high"])
    high = group == "high"
    t, e = table["time"].to_numpy(), table["event"].to_numpy()
    assert summary.logrank_p == pytest.approx(logrank_test(t[high], t[~high], e[high], e[~high]).p_value, rel=1e-12)
    assert summary.groups == ("low", "high") and sum(summary.n) == 160
    assert figure.axes  # a drawn Figure, turned into PNG by the CLI tests


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop(columns="time"), "no column 'time'"),
    (lambda t: t.assign(time=t["time"].astype(object).where(t.index != 3, "soon")), "'time' row 5 is not a number"),
    (lambda t: t.assign(event=t["event"].where(t.index != 0, 2)), "must be 0 \\(censored\\) or 1"),
    (lambda t: t.assign(f1=t["f1"].where(t.index != 7, np.nan)), "'f1' row 9 is empty"),
    (lambda t: t.assign(f1=t["f1"].astype(object).where(t.index != 7, "n/a")), "'f1' row 9 is not a number"),
    (lambda t: t.assign(f1=[f"P{i}" for i in t.index]), "column 'f1' holds text \\('P0'\\), not numbers; encode "
     "categories as numbers"),
    (lambda t: t.assign(f1=np.nan), "'f1' row 2 is empty"),
    (lambda t: t.assign(event=0).assign(event=lambda d: (d.index < 3).astype(int)), "only 3 events"),
    (lambda t: t.assign(time=-t["time"]), "negative times"),
])
def test_bad_tables_give_one_line_errors(change, message):
    table = change(_cohort(40, seed=10))
    with pytest.raises(WsiHccError, match=message) as info:
        survival_data(table, "cohort.csv", "time", "event", ["f0", "f1"], "patient")
    assert "\n" not in str(info.value) and str(info.value).startswith("cohort.csv")


def test_every_survival_config_loads_and_typos_are_named(tmp_path):
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[2] / "configs" / "survival").glob("*.yaml"))
    assert len(files) >= 2
    for path in files:
        assert isinstance(load_survival_config(path), SurvivalConfig)
    bad = tmp_path / "bad.yaml"
    bad.write_text("survival:\n  groups:\n    metod: median\n")
    with pytest.raises(ConfigError, match="groups.metod: unknown setting"):
        load_survival_config(bad)
    bad.write_text("survival:\n  groups:\n    method: fixed\n")
    with pytest.raises(ConfigError, match="needs a threshold"):
        load_survival_config(bad)


def test_rossi_cox_wrapper_matches_lifelines():
    from lifelines import CoxPHFitter
    from lifelines.datasets import load_rossi

    rossi = load_rossi()
    data = survival_data(rossi, "rossi", "week", "arrest", None)
    assert len(data.feature_names) == 7
    model = fit_cox(data)
    c_index = concordance_index(data.time, data.event, model.log_hazard(data.features))
    assert round(c_index, 4) == 0.6403
    assert c_index == pytest.approx(CoxPHFitter().fit(rossi, "week", "arrest").concordance_index_, abs=1e-9)


def _axis_labels(figure):
    """Left-hand axis names and, per name, the tick labels drawn on its row."""
    ax = figure.axes[0]
    names = {t.get_position()[1]: t.get_text() for t in ax.texts if t.get_horizontalalignment() == "right"}
    ticks = {}
    for t in ax.texts:
        if t.get_horizontalalignment() == "center":
            ticks.setdefault(names[round(t.get_position()[1] - 0.22, 6)], []).append(t.get_text())
    return ticks


def test_a_nomogram_axis_without_range_is_one_tick_naming_its_values():
    """A covariate with no effect (here 1e-17, as when it is also in the risk score) or one value once drew all
    its ticks on one spot, labels overlapping."""
    from wsi_hcc.survival.cox import BreslowBaseline
    from wsi_hcc.survival.nomogram import Nomogram, nomogram_figure

    nomogram = Nomogram(("risk score", "age", "stage"), np.array([1.0, 1e-17, 0.3]), np.array([-2.0, 18.0, 2.0]),
                        np.array([2.0, 44.0, 2.0]), 52.0,
                        BreslowBaseline(np.array([10.0, 30.0, 60.0]), np.array([0.9, 0.7, 0.5])))
    ticks = _axis_labels(nomogram_figure(nomogram, "weeks"))
    assert ticks["age (< 1 point)"] == ["18 to 44"] and ticks["stage (< 1 point)"] == ["2"]
    assert len(ticks["risk score"]) >= 4 and "Points" in ticks


def test_nomogram_labels_never_touch_and_the_time_is_short():
    """A covariate whose points pile up at one end (a skewed volume) once drew "12846" from 1, 2, 8, 4, 6;
    the survival time printed as 0.347291."""
    from wsi_hcc.survival.cox import BreslowBaseline
    from wsi_hcc.survival.nomogram import _LABEL_UNITS_PER_CHAR, Nomogram, nomogram_figure

    nomogram = Nomogram(("risk score", "tumour_ml"), np.array([1.0, 0.004]), np.array([-2.0, 1.0]),
                        np.array([2.0, 400.0]), 0.347291,
                        BreslowBaseline(np.array([0.1, 0.3, 0.6]), np.array([0.9, 0.7, 0.5])))
    figure = nomogram_figure(nomogram, "years")
    ax = figure.axes[0]
    names = [t.get_text() for t in ax.texts if t.get_horizontalalignment() == "right"]
    assert "P(survival at 0.347 years)" in names
    rows = {}
    for t in ax.texts:
        if t.get_horizontalalignment() == "center":
            rows.setdefault(round(t.get_position()[1], 6), []).append((t.get_position()[0], t.get_text()))
    for labels in rows.values():
        labels.sort()
        for (x0, a), (x1, b) in zip(labels, labels[1:]):
            assert x1 - x0 >= _LABEL_UNITS_PER_CHAR * (len(a) + len(b)) / 2, (a, b)
    assert len(rows) >= 4
