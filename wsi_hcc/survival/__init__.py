"""Prognosis: survival models after TACE, ablation and resection.

- :mod:`.data` tables and slide embeddings in, validated arrays out; :mod:`.concordance` Harrell's C;
- :mod:`.losses` the Cox partial likelihood (torchsurv; Efron or Breslow ties);
- :mod:`.cox` lifelines' Cox model and Breslow's baseline; :mod:`.deepsurv` DeepSurv and ``CoxHead``;
- :mod:`.groups` risk-group cut-offs fitted on training risks only; :mod:`.evaluation` Uno's C,
  time-dependent AUC, integrated Brier score, bootstrap CIs; :mod:`.plots` Kaplan-Meier pictures;
  :mod:`.nomogram` a Cox nomogram; :mod:`.bundle` model folders; :mod:`.pipeline` whole runs.
"""

from wsi_hcc.survival.bundle import SurvivalModel, load_model, save_model
from wsi_hcc.survival.concordance import concordance_index
from wsi_hcc.survival.config import SurvivalConfig, load_survival_config
from wsi_hcc.survival.cox import BreslowBaseline, CoxModel, fit_breslow, fit_cox
from wsi_hcc.survival.data import Standardizer, SurvivalData, slide_embeddings, survival_data
from wsi_hcc.survival.deepsurv import CoxHead, DeepSurvModel, DeepSurvNet, fit_deepsurv
from wsi_hcc.survival.evaluation import evaluate_risks, integrated_brier_score, time_dependent_auc, uno_concordance
from wsi_hcc.survival.groups import RiskCutoffs, fit_cutoffs, logrank
from wsi_hcc.survival.losses import cox_partial_nll
from wsi_hcc.survival.nomogram import Nomogram, fit_nomogram, nomogram_figure
from wsi_hcc.survival.pipeline import DataSpec, cross_validate, fit_model, run_km, run_prediction, run_survival_training
from wsi_hcc.survival.plots import km_figure, km_summary

__all__ = ["concordance_index", "SurvivalConfig", "load_survival_config", "SurvivalData", "Standardizer",
           "survival_data", "slide_embeddings", "cox_partial_nll", "CoxModel", "fit_cox", "BreslowBaseline",
           "fit_breslow", "DeepSurvNet", "CoxHead", "DeepSurvModel", "fit_deepsurv", "RiskCutoffs", "fit_cutoffs",
           "logrank", "uno_concordance", "time_dependent_auc", "integrated_brier_score", "evaluate_risks",
           "km_figure", "km_summary", "Nomogram", "fit_nomogram", "nomogram_figure", "SurvivalModel",
           "save_model", "load_model", "DataSpec", "fit_model", "cross_validate", "run_survival_training",
           "run_prediction", "run_km"]
