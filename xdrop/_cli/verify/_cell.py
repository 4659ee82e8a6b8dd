"""The unit of ``verify``'s table (:class:`Cell`) and the numerical gradient the property checks share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Cell", "central_differences"]


@dataclass
class Cell:
    """One property on one backend: a measured figure and a verdict."""

    passed: bool
    figure: str
    detail: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def central_differences(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dout: np.ndarray, h: float = 1e-6
) -> np.ndarray:
    """Numerical vector-Jacobian product: d/dx_i sum(f(x) * dout), by central differences."""
    num = np.empty_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        num[i] = np.sum((f(x + e) - f(x - e)) * dout) / (2 * h)
    return num
