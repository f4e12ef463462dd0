"""Calibrated study probabilities and an operating point chosen for a target sensitivity.

The network's raw study probability is over-confident on data unlike its training set (a normal
falx on another generator read 0.99). A site needs two things from the score: that 0.8 means
"about 80 % of such studies bleed" (the monitoring's label-free performance estimate is built on
that) and a threshold with a known sensitivity. Both are fitted on a *selection* set that was not
used for training and is never reported on:

- ``temperature``: ``p = sigmoid(logit / T)``, one parameter (Guo et al. 2017);
- ``platt``: ``p = sigmoid(a * logit + b)``, temperature plus a bias, which also moves the base
  rate when the selection set's prevalence differs from training (default);
- ``isotonic``: a monotone step function of the raw probability (pool-adjacent-violators),
  for large selection sets.

Every method is monotone, so the AUC does not change; only the probabilities and the threshold
do. The fitted map is stored in the checkpoint (``calibration``) and applied by the Predictor,
``bloodnet eval`` and the pipeline alike (:func:`apply`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

METHODS = ("temperature", "platt", "isotonic")


@dataclass(frozen=True, slots=True)
class Calibration:
    """A fitted monotone map from the study logit to a probability."""

    method: str = "identity"
    a: float = 1.0  #: slope on the logit (1/T for temperature)
    b: float = 0.0
    x: tuple[float, ...] = field(default_factory=tuple)  #: isotonic knots (raw probability)
    y: tuple[float, ...] = field(default_factory=tuple)  #: calibrated probability at the knots
    fitted_on: str = ""  #: the selection set's name

    def as_dict(self) -> dict:
        d = asdict(self)
        d["x"], d["y"] = list(self.x), list(self.y)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> Calibration:
        if not d:
            return cls()
        return cls(method=str(d.get("method", "identity")), a=float(d.get("a", 1.0)),
                   b=float(d.get("b", 0.0)), x=tuple(float(v) for v in d.get("x", ())),
                   y=tuple(float(v) for v in d.get("y", ())), fitted_on=str(d.get("fitted_on", "")))

    def __call__(self, logit: np.ndarray | float) -> np.ndarray:
        z = np.asarray(logit, dtype=np.float64)
        if self.method == "isotonic" and self.x:
            raw = _sigmoid(z)
            return np.interp(raw, np.asarray(self.x), np.asarray(self.y))
        return _sigmoid(self.a * z + self.b)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def apply(meta: dict, logit: np.ndarray | float) -> np.ndarray:
    """Calibrated probability of study logits under a checkpoint's ``calibration``."""
    return Calibration.from_dict(meta.get("calibration"))(logit)


def _nll(z: np.ndarray, y: np.ndarray, a: float, b: float, l2: float) -> float:
    s = a * z + b
    # log(1 + e^s) - y s, computed stably
    return float(np.sum(np.logaddexp(0.0, s) - y * s)) + 0.5 * l2 * (a - 1.0) ** 2


def _fit_logistic(z: np.ndarray, y: np.ndarray, *, bias: bool, l2: float = 1e-3
                  ) -> tuple[float, float]:
    """Maximum-likelihood (a, b) of ``sigmoid(a z + b)``: Newton's method with backtracking
    (the problem is convex, but a full Newton step from a = 1 overshoots on large logits)."""
    a, b = 1.0, 0.0
    f = _nll(z, y, a, b, l2)
    for _ in range(200):
        p = _sigmoid(a * z + b)
        g_a = float(np.sum((p - y) * z)) + l2 * (a - 1.0)
        g_b = float(np.sum(p - y)) if bias else 0.0
        w = p * (1 - p) + 1e-9
        h_aa = float(np.sum(w * z * z)) + l2
        h_ab = float(np.sum(w * z)) if bias else 0.0
        h_bb = float(np.sum(w)) + 1e-9 if bias else 1.0
        det = h_aa * h_bb - h_ab * h_ab
        da = (h_bb * g_a - h_ab * g_b) / det
        db = (h_aa * g_b - h_ab * g_a) / det if bias else 0.0
        step = 1.0
        while step > 1e-8:
            na, nb = a - step * da, b - step * db
            nf = _nll(z, y, na, nb, l2)
            if nf <= f:
                break
            step *= 0.5
        else:
            break
        done = f - nf < 1e-10 * max(1.0, abs(f))
        a, b, f = na, nb, nf
        if done:
            break
    return a, b


def _pava(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic regression of y on x (pool-adjacent-violators); knots at block means."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order].astype(np.float64)
    vals, wts, xsum = [], [], []
    for xi, yi in zip(xs, ys, strict=True):
        vals.append(yi)
        wts.append(1.0)
        xsum.append(xi)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            w = wts[-2] + wts[-1]
            vals[-2] = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w
            xsum[-2] += xsum[-1]
            wts[-2] = w
            del vals[-1], wts[-1], xsum[-1]
    kx = np.array([s / w for s, w in zip(xsum, wts, strict=True)])
    return kx, np.array(vals)


def fit(logits: np.ndarray, y: np.ndarray, *, method: str = "platt",
        fitted_on: str = "") -> Calibration:
    """Fit a calibration map on selection-set study logits and labels."""
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}; got {method!r}")
    if t.min() == t.max():
        raise ValueError("calibration needs positive and negative studies")
    if method == "isotonic":
        kx, ky = _pava(_sigmoid(z), t)
        # a little shrinkage to the ends so no probability is exactly 0 or 1
        n = t.size
        ky = (ky * n + 0.5) / (n + 1)
        return Calibration("isotonic", x=tuple(kx.tolist()), y=tuple(ky.tolist()),
                           fitted_on=fitted_on)
    a, b = _fit_logistic(z, t, bias=method == "platt")
    return Calibration(method, a=a, b=b, fitted_on=fitted_on)


def ece(y: np.ndarray, p: np.ndarray, *, bins: int = 10) -> float:
    """Expected calibration error: the share-weighted mean |observed rate - mean probability|
    over ``bins`` equal-width probability bins."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for k in range(bins):
        sel = idx == k
        if sel.any():
            total += sel.sum() / p.size * abs(y[sel].mean() - p[sel].mean())
    return float(total)


def reliability_table(y: np.ndarray, p: np.ndarray, *, bins: int = 10) -> list[dict]:
    """Per bin: range, count, mean probability and observed rate (for the JSON and the PNG)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for k in range(bins):
        sel = idx == k
        out.append({"low": k / bins, "high": (k + 1) / bins, "n": int(sel.sum()),
                    "mean_probability": float(p[sel].mean()) if sel.any() else None,
                    "observed_rate": float(y[sel].mean()) if sel.any() else None})
    return out


def threshold_for_sensitivity(y: np.ndarray, p: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity (``p >= t`` among positives) is at least
    ``target``."""
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1]; got {target}")
    pos = np.sort(np.asarray(p, dtype=np.float64)[np.asarray(y) == 1])
    if pos.size == 0:
        raise ValueError("no positive studies to set a sensitivity on")
    k = math.floor((1 - target) * pos.size + 1e-9)  # positives allowed below t
    return float(pos[min(k, pos.size - 1)])


def reliability_png(y: np.ndarray, p: np.ndarray, path: Path, *, bins: int = 10,
                    title: str = "") -> Path:
    """A reliability diagram (observed ICH rate against mean predicted probability per bin,
    with the diagonal and the bin counts) as a PNG, drawn with Pillow."""
    from PIL import Image, ImageDraw

    table = reliability_table(y, p, bins=bins)
    size, m = 420, 48
    img = Image.new("RGB", (size, size + 40), "white")
    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = m, 20, size - 20, size - m

    def px(u: float, v: float) -> tuple[float, float]:
        return x0 + u * (x1 - x0), y1 - v * (y1 - y0)

    d.rectangle([x0, y0, x1, y1], outline="black")
    for k in range(1, 10):
        gx, _ = px(k / 10, 0)
        _, gy = px(0, k / 10)
        d.line([gx, y0, gx, y1], fill=(230, 230, 230))
        d.line([x0, gy, x1, gy], fill=(230, 230, 230))
    d.line([px(0, 0), px(1, 1)], fill=(150, 150, 150), width=1)
    n_max = max(1, max(r["n"] for r in table))
    for r in table:  # counts as light bars along the bottom
        h = 0.18 * r["n"] / n_max
        (bx0, by1), (bx1, by0) = px(r["low"], 0), px(r["high"], h)
        d.rectangle([bx0, by0, bx1, by1], fill=(200, 215, 240))
    pts = [px(r["mean_probability"], r["observed_rate"]) for r in table if r["n"]]
    if len(pts) > 1:
        d.line(pts, fill=(200, 30, 30), width=2)
    for q in pts:
        d.ellipse([q[0] - 3, q[1] - 3, q[0] + 3, q[1] + 3], fill=(200, 30, 30))
    for k in (0, 5, 10):
        d.text((px(k / 10, 0)[0] - 8, y1 + 4), f"{k / 10:.1f}", fill="black")
        d.text((4, px(0, k / 10)[1] - 6), f"{k / 10:.1f}", fill="black")
    d.text((x0, y1 + 20), "mean predicted probability", fill="black")
    d.text((x0, size + 8), f"{title}  ECE {ece(y, p, bins=bins):.3f}  n={len(y)}",
           fill="black")
    d.text((x0 + 4, y0 + 4), "observed ICH rate", fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path

