"""Latent code blocks for the semi-conditional family: parsing, sampling with correlation, quantiles, recovery.

A block is ``DIST:DIM[:key=value,...]``, e.g. ``bernoulli:5:p=0.5``, ``exponential:5:rate=1``,
``uniform:5:low=-1,high=1``, ``normal:5`` (``loc``, ``scale``). Marginals are ``torch.distributions``.
Dimensions inside a block co-vary through a Gaussian copula: ``u ~ N(0, R)`` with equicorrelation ``rho``,
each coordinate mapped through the standard normal CDF and then the block's inverse CDF (a Bernoulli
dimension is 1 where the uniform exceeds ``1 - p``). With ``rho = 0`` the dimensions are independent draws of
the marginal. Blocks are independent of each other and of the noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence

import torch
from torch import distributions as D

from ..errors import CxrganError

DEFAULT_CODES = ["bernoulli:5:p=0.5", "exponential:5:rate=1", "uniform:5:low=-1,high=1", "normal:5"]
_PARAMS = {
    "bernoulli": {"p": 0.5},
    "exponential": {"rate": 1.0},
    "uniform": {"low": -1.0, "high": 1.0},
    "normal": {"loc": 0.0, "scale": 1.0},
}
_FLAG = "--code (model.codes)"


@dataclass(frozen=True)
class CodeBlock:
    """One block: its name (the distribution, numbered when repeated), distribution, size and parameters."""

    name: str
    dist: str
    dim: int
    params: dict[str, float] = field(default_factory=dict)

    @property
    def discrete(self) -> bool:
        return self.dist == "bernoulli"

    @cached_property
    def _marginal(self) -> D.Distribution:
        """The marginal, built (and its parameters validated) once: sampling then reads no tensor value back."""
        return self.marginal()

    def marginal(self) -> D.Distribution:
        p = self.params
        if self.dist == "bernoulli":
            return D.Bernoulli(probs=torch.tensor(p["p"]), validate_args=True)
        if self.dist == "exponential":
            return D.Exponential(torch.tensor(p["rate"]), validate_args=True)
        if self.dist == "uniform":
            return D.Uniform(torch.tensor(p["low"]), torch.tensor(p["high"]), validate_args=True)
        return D.Normal(torch.tensor(p["loc"]), torch.tensor(p["scale"]), validate_args=True)

    def from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """Values of this block's marginal at probabilities ``u`` in (0, 1) (its inverse CDF)."""
        if self.dist == "bernoulli":
            return (u > 1.0 - self.params["p"]).to(torch.float32)
        return self._marginal.icdf(u.clamp(1e-6, 1 - 1e-6)).to(torch.float32)

    def spec(self) -> str:
        params = ",".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.dist}:{self.dim}" + (f":{params}" if params else "")


def parse_block(text: str) -> tuple[str, int, dict[str, float]]:
    """``DIST:DIM[:k=v,...]`` -> parts, with one clear message per mistake (naming the flag and the fix)."""
    where = f"{_FLAG} {text!r}"
    parts = [p.strip() for p in str(text).split(":")]
    if len(parts) < 2 or len(parts) > 3:
        raise CxrganError(f"{where}: expected DIST:DIM[:key=value,...], e.g. exponential:5:rate=1")
    dist = parts[0].lower()
    if dist not in _PARAMS:
        raise CxrganError(f"{where}: unknown distribution {parts[0]!r}; use one of {', '.join(_PARAMS)}")
    try:
        dim = int(parts[1])
    except ValueError:
        raise CxrganError(f"{where}: the dimension must be a whole number, e.g. {dist}:5") from None
    if dim < 1:
        raise CxrganError(f"{where}: the dimension must be at least 1, got {dim}")
    params = dict(_PARAMS[dist])
    if len(parts) == 3 and parts[2]:
        for item in parts[2].split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or key not in params:
                raise CxrganError(f"{where}: unknown parameter {key!r} for {dist}; it takes {', '.join(params)}")
            try:
                params[key] = float(value)
            except ValueError:
                raise CxrganError(f"{where}: {key} must be a number, got {value!r}") from None
    ok, rule = {
        "bernoulli": lambda p: (0.0 < p["p"] < 1.0, "p must be strictly between 0 and 1"),
        "exponential": lambda p: (p["rate"] > 0, "rate must be positive"),
        "uniform": lambda p: (p["low"] < p["high"], "low must be less than high"),
        "normal": lambda p: (p["scale"] > 0, "scale must be positive"),
    }[dist](params)
    if not ok or not all(math.isfinite(v) for v in params.values()):
        raise CxrganError(f"{where}: {rule}, and every parameter finite")
    return dist, dim, params


class CodeSpace:
    """The configured blocks and their correlation: sampling, quantile sweeps, recovery figures."""

    def __init__(self, specs: Sequence[str], correlation: float = 0.0) -> None:
        if not specs:
            raise CxrganError(f"{_FLAG}: give at least one code block, e.g. --code normal:5")
        blocks, seen = [], {}
        for text in specs:
            dist, dim, params = parse_block(text)
            seen[dist] = seen.get(dist, 0) + 1
            blocks.append(CodeBlock(dist if seen[dist] == 1 else f"{dist}{seen[dist]}", dist, dim, params))
        self.blocks: list[CodeBlock] = blocks
        worst = max(b.dim for b in blocks)
        low = -1.0 / (worst - 1) if worst > 1 else -1.0
        if not (low < correlation < 1.0) or not math.isfinite(correlation):
            raise CxrganError(f"--code-correlation (model.code_correlation) must be in ({low:g}, 1) for blocks of "
                              f"{worst} dimensions, got {correlation}")
        self.correlation = float(correlation)
        self.dim = sum(b.dim for b in blocks)
        marginals = [(b.marginal(), b.dim) for b in blocks]
        self._mean = torch.cat([m.mean.float().expand(d) for m, d in marginals])
        self._sd = torch.cat([m.stddev.float().expand(d) for m, d in marginals])

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for b in self.blocks:
            out[b.name] = slice(start, start + b.dim)
            start += b.dim
        return out

    def block(self, name: str) -> CodeBlock:
        for b in self.blocks:
            if b.name == name:
                return b
        raise CxrganError(f"no code block {name!r}; this run has {', '.join(b.name for b in self.blocks)}")

    def _normals(self, n: int, dim: int, generator: torch.Generator | None) -> torch.Tensor:
        """``(n, dim)`` standard normals with equicorrelation ``rho``: ``sqrt(1 - rho) (e - mean e) +
        sqrt(1 + (dim - 1) rho) mean e`` for iid ``e`` has unit variances and covariance ``rho`` (either sign)."""
        e = torch.randn(n, dim, generator=generator)
        m = e.mean(dim=1, keepdim=True)
        rho = self.correlation
        return math.sqrt(1 - rho) * (e - m) + math.sqrt(1 + (dim - 1) * rho) * m

    def sample(self, n: int, generator: torch.Generator | None = None, fixed: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Codes ``(n, dim)``; blocks named in ``fixed`` take the given values (a ``(dim,)`` or ``(n, dim)`` tensor)."""
        parts = []
        for b in self.blocks:
            u = 0.5 * (1 + torch.erf(self._normals(n, b.dim, generator) / math.sqrt(2)))  # the standard normal CDF
            values = b.from_uniform(u)
            if fixed and b.name in fixed:
                values = torch.as_tensor(fixed[b.name], dtype=torch.float32).expand(n, b.dim).clone()
            parts.append(values)
        return torch.cat(parts, dim=1)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and standard deviation ``(dim,)`` of the marginals (the copula leaves them as they are)."""
        return self._mean, self._sd

    def standardize(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes in units of their marginal's standard deviation around its mean, so that every block weighs the
        same in a squared-error loss (a Bernoulli(0.5) dimension has variance 0.25, a normal one 1)."""
        mean, sd = (t.to(codes.device) for t in self.moments())
        return (codes - mean) / sd

    def unstandardize(self, values: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`standardize`."""
        mean, sd = (t.to(values.device) for t in self.moments())
        return values * sd + mean

    def quantile_values(self, name: str, steps: int) -> torch.Tensor:
        """``steps`` values sweeping block ``name`` from its 5th to its 95th percentile (Bernoulli: 0 then 1)."""
        b = self.block(name)
        q = torch.linspace(0.05, 0.95, steps)
        return b.from_uniform(q)

    def parse_fixed(self, text: str) -> tuple[str, torch.Tensor]:
        """``NAME=v1,v2,...`` (one value per dimension, or one for all) -> block name and values."""
        name, eq, values = text.partition("=")
        b = self.block(name.strip())
        try:
            v = [float(x) for x in values.split(",") if x.strip()]
        except ValueError:
            raise CxrganError(f"--code {text!r}: values must be numbers, e.g. {b.name}=0.5") from None
        if not eq or len(v) not in (1, b.dim):
            raise CxrganError(f"--code {text!r}: give {b.name}=VALUE or {b.dim} comma-separated values")
        if b.dist == "bernoulli" and any(x not in (0.0, 1.0) for x in v):
            raise CxrganError(f"--code {text!r}: a Bernoulli block takes 0 or 1")
        if b.dist == "exponential" and any(x < 0 for x in v):
            raise CxrganError(f"--code {text!r}: an exponential block takes values >= 0")
        if b.dist == "uniform" and any(not b.params["low"] <= x <= b.params["high"] for x in v):
            raise CxrganError(f"--code {text!r}: values must lie in [{b.params['low']:g}, {b.params['high']:g}]")
        return b.name, torch.tensor(v if len(v) == b.dim else v * b.dim)

    def recovery(self, predicted: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
        """Per block: R^2 of ``predicted`` against ``true`` (continuous; 0 = predicting the mean) or accuracy of
        thresholding at the midpoint (Bernoulli; 0.5 = chance for p = 0.5). Keys ``code_NAME_r2`` / ``code_NAME_acc``."""
        out = {}
        for b, sl in zip(self.blocks, self.slices().values()):
            p, t = predicted[:, sl].double(), true[:, sl].double()
            if b.discrete:
                out[f"code_{b.name}_acc"] = float(((p > 0.5).double() == t).double().mean())
            else:
                sse = ((p - t) ** 2).sum(0)
                sst = ((t - t.mean(0)) ** 2).sum(0).clamp_min(1e-12)
                out[f"code_{b.name}_r2"] = float((1 - sse / sst).mean())
        return out
