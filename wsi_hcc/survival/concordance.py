"""Harrell's concordance index, with lifelines' conventions exactly (higher risk = earlier event).

A pair (i, j) is comparable when i had the event and j left later, or j was censored at the same
time as i's event; tied event times are not comparable (neither patient is known to fail first).
A comparable pair is concordant when i has the higher risk; tied risks count one half.
"""

from __future__ import annotations

import numpy as np

from wsi_hcc.errors import WsiHccError

__all__ = ["concordance_index", "concordance_counts"]

_CHUNK = 2048  # event rows compared at once: bounds memory at _CHUNK x n booleans


def concordance_counts(time, event, risk) -> tuple[int, int, int]:
    """(concordant, tied-risk, comparable) pair counts; exact integers."""
    time = np.asarray(time, dtype=np.float64).ravel()
    event = np.asarray(event).astype(bool).ravel()
    risk = np.asarray(risk, dtype=np.float64).ravel()
    if not time.shape == event.shape == risk.shape:
        raise WsiHccError(f"concordance_index: time, event and risk differ in length "
                          f"({time.size}, {event.size}, {risk.size})")
    if np.isnan(time).any() or np.isnan(risk).any():
        raise WsiHccError("concordance_index: NaN in time or risk; drop those patients first")
    concordant = tied = comparable = 0
    events = np.flatnonzero(event)
    for start in range(0, events.size, _CHUNK):
        rows = events[start:start + _CHUNK]
        t_i, r_i = time[rows, None], risk[rows, None]
        pairs = (time[None, :] > t_i) | ((time[None, :] == t_i) & ~event[None, :])
        comparable += int(pairs.sum())
        concordant += int((pairs & (risk[None, :] < r_i)).sum())
        tied += int((pairs & (risk[None, :] == r_i)).sum())
    return concordant, tied, comparable


def concordance_index(time, event, risk) -> float:
    """Harrell's C: the share of comparable pairs whose higher-risk patient has the event first.

    Parameters
    ----------
    time : (n,) array of event or censoring times
    event : (n,) array, 1/True where the event was observed
    risk : (n,) array, higher = earlier event (a log hazard, a hazard ratio, a score)

    Returns
    -------
    float
        Equal to ``lifelines.utils.concordance_index(time, -risk, event)``.
    """
    concordant, tied, comparable = concordance_counts(time, event, risk)
    if comparable == 0:
        raise WsiHccError("concordance_index: no comparable pairs (no events before other patients' exits)")
    return (concordant + tied / 2) / comparable
