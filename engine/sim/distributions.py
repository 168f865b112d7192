"""Random distributions named in text, so a command line or a JSON file can say them.

``"lognormal:mean=0.5,sigma=1.2"``, ``"pareto:alpha=1.5,min=0.01"``,
``"exp:mean=0.2"``, ``"uniform:low=1,high=3"``, ``"fixed:value=1"`` (or just a
number).  Every draw goes through a numpy ``Generator`` handed in by the caller, so a
seed fixes every sample.  ``mean`` is the distribution's mean (for lognormal, sigma
is the spread of the underlying normal and mu is derived: mu = ln(mean) - sigma^2/2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PARAMS = {
    "fixed": ("value",),
    "exp": ("mean",),
    "lognormal": ("mean", "sigma"),
    "pareto": ("alpha", "min"),
    "uniform": ("low", "high"),
}


class DistributionError(ValueError):
    """A distribution text that cannot be understood (the message says why)."""


@dataclass(frozen=True)
class Distribution:
    kind: str
    params: tuple[tuple[str, float], ...]

    def __getitem__(self, name: str) -> float:
        return dict(self.params)[name]

    @property
    def mean(self) -> float:
        """The mean (inf for Pareto with alpha <= 1)."""
        p = dict(self.params)
        if self.kind == "fixed":
            return p["value"]
        if self.kind in ("exp", "lognormal"):
            return p["mean"]
        if self.kind == "uniform":
            return (p["low"] + p["high"]) / 2
        a = p["alpha"]
        return math.inf if a <= 1 else a * p["min"] / (a - 1)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        p = dict(self.params)
        kind = self.kind
        if kind == "fixed":
            return np.full(n, p["value"], dtype=np.float64)
        if kind == "exp":
            return rng.exponential(p["mean"], n)
        if kind == "lognormal":
            sigma = p["sigma"]
            return rng.lognormal(math.log(p["mean"]) - sigma * sigma / 2, sigma, n)
        if kind == "uniform":
            return rng.uniform(p["low"], p["high"], n)
        # Pareto type I: min * (1 + Lomax)
        return p["min"] * (1.0 + rng.pareto(p["alpha"], n))

    def __str__(self) -> str:
        return self.kind + ":" + ",".join(f"{k}={v:g}" for k, v in self.params)


def parse(text: str | float | int | Distribution) -> Distribution:
    """``kind:name=value,...`` (or a bare number = fixed) -> Distribution."""
    if isinstance(text, Distribution):
        return text
    if isinstance(text, int | float):
        return Distribution("fixed", (("value", float(text)),))
    text = text.strip()
    try:
        return Distribution("fixed", (("value", float(text)),))
    except ValueError:
        pass
    kind, _, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind not in PARAMS:
        raise DistributionError(f"unknown distribution {kind!r} (known: {', '.join(PARAMS)})")
    values: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        name, eq, value = item.partition("=")
        if not eq:
            raise DistributionError(f"{text!r}: expected name=value, got {item!r}")
        try:
            values[name.strip()] = float(value)
        except ValueError:
            raise DistributionError(f"{text!r}: {name.strip()} is not a number") from None
    names = PARAMS[kind]
    unknown = set(values) - set(names)
    missing = [n for n in names if n not in values]
    if unknown or missing:
        raise DistributionError(f"{text!r}: {kind} takes {', '.join(names)}"
                                + (f" (missing {', '.join(missing)})" if missing else "")
                                + (f" (unknown {', '.join(sorted(unknown))})" if unknown else ""))
    _check(kind, values, text)
    return Distribution(kind, tuple((n, values[n]) for n in names))


def _check(kind: str, v: dict[str, float], text: str) -> None:
    bad = ((kind == "exp" and v["mean"] <= 0)
           or (kind == "lognormal" and (v["mean"] <= 0 or v["sigma"] < 0))
           or (kind == "pareto" and (v["alpha"] <= 0 or v["min"] <= 0))
           or (kind == "uniform" and v["high"] < v["low"])
           or (kind == "fixed" and v["value"] < 0))
    if bad:
        raise DistributionError(f"{text!r}: parameters out of range")
