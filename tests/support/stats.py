"""Reference statistics computed another way than the product computes them, for tests."""

from __future__ import annotations

import numpy as np


def delong_by_placements(y: np.ndarray, pa: np.ndarray, pb: np.ndarray) -> tuple[float, float]:
    """AUC difference and its standard error from DeLong's placement values (pairwise, O(mn)).

    DeLong et al. (1988) by its original definition, not the midrank algorithm the product uses.
    """
    pos, neg = y == 1, y == 0

    def placements(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        diff = p[pos][:, None] - p[neg][None, :]
        psi = (diff > 0) + 0.5 * (diff == 0)
        return psi.mean(axis=1), psi.mean(axis=0)

    (va, wa), (vb, wb) = placements(pa), placements(pb)
    variance = np.var(va - vb, ddof=1) / pos.sum() + np.var(wa - wb, ddof=1) / neg.sum()
    return float(np.mean(va) - np.mean(vb)), float(np.sqrt(variance))
