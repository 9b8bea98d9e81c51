"""Fitting a new classification head on pooled backbone features.

Multinomial logistic regression (scikit-learn, L-BFGS: deterministic for given data), class
balanced (each label weighs the same in the loss however many photos it has: a user's
classes are rarely balanced and the rare one is often the one that matters), on standardised
features. The standardisation is folded back into the kernel and bias afterwards, so the result
is an ordinary Dense head on raw features: the exported model's where path (class activation
maps) and what path read it exactly like the ImageNet head.

The L2 strength is chosen on the validation split, by the accuracy that matters: glimpse
(canvas) top-1 first, full-image top-1 to break ties, the weaker regularisation last.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)  # inverse L2 strength, on standardised features


@dataclass(frozen=True)
class Head:
    """A linear head: logits = features @ kernel + bias; kernel [C, K], bias [K]."""

    kernel: np.ndarray
    bias: np.ndarray

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.kernel + self.bias

    def digest(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.kernel, np.float32).tobytes())
        h.update(np.ascontiguousarray(self.bias, np.float32).tobytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class Rows:
    """Training rows: pooled features [N, C] and class indices [N]."""

    features: np.ndarray
    labels: np.ndarray

    @staticmethod
    def stack(*parts: Rows) -> Rows:
        return Rows(
            np.concatenate([p.features for p in parts]), np.concatenate([p.labels for p in parts])
        )


@dataclass(frozen=True)
class Choice:
    c: float
    glimpse_top1: float
    full_top1: float


class _Fitter:
    """Logistic regressions on one standardised training set, warm-started along the C grid
    (each fit starts from the last: the whole grid costs about two cold fits)."""

    def __init__(self, rows: Rows, num_classes: int, seed: int):
        from sklearn.linear_model import LogisticRegression

        x = rows.features.astype(np.float64)
        self.mean = x.mean(axis=0)
        self.scale = x.std(axis=0)
        self.scale[self.scale < 1e-6] = 1.0
        self.x = (x - self.mean) / self.scale
        self.y = rows.labels
        self.num_classes = num_classes
        self.model = LogisticRegression(
            class_weight="balanced", max_iter=300, tol=1e-4, warm_start=True, random_state=seed
        )

    def __call__(self, c: float) -> Head:
        from sklearn.exceptions import ConvergenceWarning

        self.model.set_params(C=c)
        with warnings.catch_warnings():
            # The accuracy plateau comes long before the loss's last digits.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(self.x, self.y)
        model, width = self.model, self.x.shape[1]
        coef = np.zeros((self.num_classes, width))
        intercept = np.full(self.num_classes, -1e4)  # a class without rows never wins
        seen = model.classes_.astype(int)
        if len(seen) == 2:  # scikit-learn keeps one row for two classes: the second's logit
            coef[seen[1]], intercept[seen[1]] = model.coef_[0] / 2, model.intercept_[0] / 2
            coef[seen[0]], intercept[seen[0]] = -model.coef_[0] / 2, -model.intercept_[0] / 2
        else:
            coef[seen], intercept[seen] = model.coef_, model.intercept_
        kernel = (coef / self.scale).T
        bias = intercept - (self.mean / self.scale) @ coef.T
        return Head(kernel.astype(np.float32), bias.astype(np.float32))


def fit(rows: Rows, num_classes: int, c: float, seed: int = 0) -> Head:
    """A class-balanced L2 logistic-regression head on `rows`, as kernel [C, K] and bias [K]."""
    return _Fitter(rows, num_classes, seed)(c)


def top1(head: Head, rows: Rows) -> float:
    if not len(rows.labels):
        return float("nan")
    return float(np.mean(np.argmax(head.logits(rows.features), axis=1) == rows.labels))


def balanced_top1(head: Head, rows: Rows) -> float:
    """Mean per-class recall: the validation score, so a big class cannot hide a lost one."""
    if not len(rows.labels):
        return float("nan")
    hit = np.argmax(head.logits(rows.features), axis=1) == rows.labels
    return float(np.mean([hit[rows.labels == k].mean() for k in np.unique(rows.labels)]))


def choose(
    train: Rows,
    val_full: Rows,
    val_glimpse: Rows,
    num_classes: int,
    grid: tuple[float, ...] = C_GRID,
    seed: int = 0,
) -> tuple[Head, Choice, list[Choice]]:
    """Fit one head per C; keep the best on validation (glimpse, then full, then larger C).

    Without validation rows (tiny datasets) the middle of the grid is taken."""
    tried: list[tuple[Head, Choice]] = []
    fitter = _Fitter(train, num_classes, seed)
    for c in sorted(grid):
        head = fitter(c)
        tried.append(
            (head, Choice(c, balanced_top1(head, val_glimpse), balanced_top1(head, val_full)))
        )
    if not len(val_full.labels):
        head, choice = tried[len(tried) // 2]
    else:
        head, choice = max(tried, key=lambda t: (t[1].glimpse_top1, t[1].full_top1, t[1].c))
    return head, choice, [t[1] for t in tried]
