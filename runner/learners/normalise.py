"""Running statistics for reward (and, later, return) standardisation.

:class:`RunningMeanStd` keeps the mean and (population) variance of every value it has been fed,
updated batch by batch with the parallel-variance formula of Chan, Golub and LeVeque (1979): a
batch of n values with mean m_b and variance v_b merges into (mean, var, count) as

    delta = m_b - mean;  total = count + n
    mean' = mean + delta * n / total
    var'  = (var * count + v_b * n + delta^2 * count * n / total) / total

It starts at mean 0, variance 1 and a pseudo-count ``epsilon`` (1e-4), so the first batch all but
replaces the prior. Statistics are kept in float64 and saved in checkpoints (``state_dict``), so a
resumed run standardises exactly as the run it continues.
"""

from __future__ import annotations

from typing import Any

import torch


class RunningMeanStd:
    """Mean and variance of a stream of scalars, fed as (masked) batches."""

    def __init__(self, epsilon: float = 1e-4, device: torch.device | str = "cpu") -> None:
        self.mean = torch.zeros((), dtype=torch.float64, device=device)
        self.var = torch.ones((), dtype=torch.float64, device=device)
        self.count = torch.full((), epsilon, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Merge the values of ``x`` (only where ``mask`` is nonzero, when given)."""
        x = x.detach().to(torch.float64)
        if mask is None:
            w = torch.ones_like(x)
        else:
            w = mask.detach().to(torch.float64).expand_as(x)
        n = w.sum()  # no early return on n = 0 (no host sync in the update): the formulas leave it unchanged
        b_mean = (x * w).sum() / n.clamp_min(1.0)
        b_var = (((x - b_mean) ** 2) * w).sum() / n.clamp_min(1.0)
        delta = b_mean - self.mean
        total = self.count + n
        self.var = (self.var * self.count + b_var * n + delta**2 * self.count * n / total) / total
        self.mean = self.mean + delta * n / total
        self.count = total

    @property
    def std(self) -> torch.Tensor:
        return self.var.sqrt()

    def standardise(self, x: torch.Tensor, centre: bool = True) -> torch.Tensor:
        """(x - mean) / std, in x's dtype; without ``centre``: x / std."""
        shifted = x - self.mean.to(x.dtype) if centre else x
        return shifted / self.std.to(x.dtype).clamp_min(1e-12)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.cpu(), "var": self.var.cpu(), "count": self.count.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dev = self.mean.device
        self.mean = state["mean"].to(dev, torch.float64)
        self.var = state["var"].to(dev, torch.float64)
        self.count = state["count"].to(dev, torch.float64)
