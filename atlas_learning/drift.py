"""Drift: is this session's reward an outlier against its learning key's history?

Two scores of the reward against the baseline (earlier sessions of the key, the current one excluded): the
z-score, and the MAD-based modified z-score (0.6745 * (x - median) / MAD), which a few earlier outliers do not
skew. When MAD is 0 (most earlier rewards equal, common with pass/fail checks) the mean absolute deviation
stands in (scaled by 1.2533, its standard equivalent). Either score over its threshold raises an alert, provided
the reward is at least ``min_abs_deviation`` from the baseline's median: on a 0..1 scale, a shift of a few
hundredths is never worth a review. The session is then held for review with the reason.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DriftCheck", "check_drift"]

_EPSILON = 1e-9


def _signed_infinity(difference: float) -> float:
    return 0.0 if abs(difference) <= _EPSILON else float("inf") if difference > 0 else float("-inf")


@dataclass(frozen=True)
class DriftCheck:
    """The outcome of one drift check. ``alert`` is False with a reason when the baseline is too short."""

    alert: bool
    reason: str
    z_score: float | None = None
    mad_z_score: float | None = None
    baseline_size: int = 0


def check_drift(
    reward: float,
    baseline: Sequence[float],
    *,
    min_history: int = 5,
    z_threshold: float = 3.0,
    mad_z_threshold: float = 3.5,
    min_abs_deviation: float = 0.1,
) -> DriftCheck:
    """Compare ``reward`` with ``baseline`` (earlier rewards of the same key, not including this one)."""
    size = len(baseline)
    if size < min_history:
        return DriftCheck(False, f"baseline has {size} sessions, fewer than the {min_history} needed", baseline_size=size)
    mean = statistics.fmean(baseline)
    median = statistics.median(baseline)
    deviation = reward - median
    stdev = statistics.pstdev(baseline)
    mad = statistics.median(abs(x - median) for x in baseline)
    z = (reward - mean) / stdev if stdev > _EPSILON else _signed_infinity(reward - mean)
    if mad > _EPSILON:
        mad_z = 0.6745 * deviation / mad
    else:
        mean_abs_deviation = statistics.fmean(abs(x - median) for x in baseline)
        mad_z = deviation / (1.2533 * mean_abs_deviation) if mean_abs_deviation > _EPSILON else _signed_infinity(deviation)
    if abs(deviation) < min_abs_deviation:
        return DriftCheck(False, f"within {min_abs_deviation} of the baseline median", z, mad_z, size)
    reasons = []
    if abs(z) > z_threshold:
        reasons.append(f"z-score {z:+.2f} beyond ±{z_threshold}")
    if abs(mad_z) > mad_z_threshold:
        reasons.append(f"MAD z-score {mad_z:+.2f} beyond ±{mad_z_threshold}")
    if reasons:
        reason = f"reward {reward:.3f} against a baseline of {size} (mean {mean:.3f}, median {median:.3f}): " + "; ".join(reasons)
        return DriftCheck(True, reason, z, mad_z, size)
    return DriftCheck(False, "within the baseline", z, mad_z, size)
