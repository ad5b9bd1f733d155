"""Patient-level cross-validation folds: no patient's slides are ever in two folds.

Patients are stratified by label (a patient's class is the most common label of their slides) and
dealt round-robin, class by class, after a seeded shuffle, so every fold gets about the same share
of each class. Deterministic for a seed; no scikit-learn warnings on small cohorts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.training.datasets import SlideLabel
from wsi_hcc.utils.words import counted

__all__ = ["patient_folds", "split_validation", "patients_by_class"]


def patients_by_class(slides: Sequence[SlideLabel]) -> dict[str, list[str]]:
    """{label: sorted patients}, each patient under the most common label of their slides."""
    labels: dict[str, Counter] = {}
    for s in slides:
        labels.setdefault(s.patient, Counter())[s.label] += 1
    by_class: dict[str, list[str]] = {}
    for patient in sorted(labels):
        label = sorted(labels[patient].items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        by_class.setdefault(label, []).append(patient)
    return by_class


def patient_folds(slides: Sequence[SlideLabel], k: int, seed: int = 0) -> list[list[str]]:
    """``k`` lists of slide stems; each patient's slides are all in one fold."""
    by_class = patients_by_class(slides)
    n_patients = sum(len(v) for v in by_class.values())
    if n_patients < k:
        fix = f"pass --folds {n_patients} or fewer" if n_patients >= 2 else "add patients"
        raise WsiHccError(f"{counted(n_patients, 'patient')} cannot make {k} folds; {fix}")
    rng = np.random.default_rng(seed)
    slides_of: dict[str, list[str]] = {}
    for s in slides:
        slides_of.setdefault(s.patient, []).append(s.slide)
    folds: list[list[str]] = [[] for _ in range(k)]
    turn = 0
    for label in sorted(by_class):
        patients = list(by_class[label])
        rng.shuffle(patients)
        for patient in patients:
            folds[turn % k].extend(slides_of[patient])
            turn += 1
    return [sorted(f) for f in folds]


def split_validation(slides: Sequence[SlideLabel], fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, validation) slide stems from ``slides``: about ``fraction`` of each class' patients
    (at least one where a class has two or more) go to validation."""
    rng = np.random.default_rng(seed)
    slides_of: dict[str, list[str]] = {}
    for s in slides:
        slides_of.setdefault(s.patient, []).append(s.slide)
    train, validation = [], []
    for label, patients in sorted(patients_by_class(slides).items()):
        patients = list(patients)
        rng.shuffle(patients)
        n_val = int(round(fraction * len(patients)))
        if len(patients) >= 2:
            n_val = min(max(1, n_val), len(patients) - 1)
        for i, patient in enumerate(patients):
            (validation if i < n_val else train).extend(slides_of[patient])
    return sorted(train), sorted(validation)
