"""The seed's worked example: three points, squared loss, y = m x + b."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .influence import Influence
from .models import LinearRegression


@dataclass
class SeedExample:
    X: np.ndarray
    y: np.ndarray
    slope: float
    intercept: float
    params: np.ndarray  # (3, 2): I(z_m) = [dm/dw_m, db/dw_m]
    scores: np.ndarray  # (3, 3): [t, m] influence of point m on the loss at point t

    def report(self) -> str:
        lines = [
            "Seed example: points (0, 0), (1, 1.5), (2, 2); squared loss; y = m x + b",
            f"fitted line: y = {self.slope:.6f} x + {self.intercept:.6f}",
            "",
            "influence of each point on the parameters, I(z) = d(m, b)/d w:",
            "  point        dm/dw        db/dw",
        ]
        for i in range(3):
            x, y = self.X[i, 0], self.y[i]
            lines.append(f"  ({x:g}, {y:g})  {self.params[i, 0]:+11.6f}  {self.params[i, 1]:+11.6f}")
        lines += ["", "influence of point m (columns) on the loss at point t (rows):",
                  "  t \\ m     " + "".join(f"({x:g}, {y:g})".rjust(12) for x, y in zip(self.X[:, 0], self.y, strict=True))]
        for t in range(3):
            lines.append(f"  ({self.X[t, 0]:g}, {self.y[t]:g})".ljust(12) + "".join(f"{v:+12.6f}" for v in self.scores[t]))
        return "\n".join(lines)


def seed_example() -> SeedExample:
    """Fit the three-point example with the library and compute its influence tables."""
    X = np.array([[0.0], [1.0], [2.0]])
    y = np.array([0.0, 1.5, 2.0])
    model = LinearRegression().fit(X, y)
    inf = Influence(model, X, y)
    return SeedExample(X, y, float(model.coef_[0]), model.intercept_, inf.params(), inf.on_loss(X, y))
