"""Agreement of an evaluator with human labels over pairwise items.

Labels are int8 codes: `A` (model_a wins), `B` (model_b wins), `TIE`, and `MISSING` (the evaluator
gave no usable verdict). Functions that compare with humans count `MISSING` as `TIE`: an evaluator
that cannot decide expresses no preference, and is not flattered by dropping the item.
"""

from __future__ import annotations

import numpy as np

A, B, TIE, MISSING = 0, 1, 2, -1
CLASSES = ("model_a", "model_b", "tie")  # human_winner values, in code order


def encode(winners: list[str] | np.ndarray) -> np.ndarray:
    """`model_a`/`model_b`/`tie` strings -> codes; anything else raises ValueError."""
    index = {name: code for code, name in enumerate(CLASSES)}
    try:
        return np.array([index[w] for w in winners], dtype=np.int8)
    except KeyError as e:
        raise ValueError(f"unknown label {e.args[0]!r} (expected one of {', '.join(CLASSES)})") from None


def decided(predicted: np.ndarray) -> np.ndarray:
    """`MISSING` counted as `TIE`."""
    return np.where(predicted == MISSING, TIE, predicted).astype(np.int8)


def pair_codes(human: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Each item's cell of the 3x3 confusion matrix, `3 * human + predicted`, in 0..8."""
    return (3 * human.astype(np.int64) + decided(predicted)).astype(np.int64)


def confusion(human: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """3x3 counts: rows are human labels, columns the evaluator's (`MISSING` as `TIE`)."""
    return np.bincount(pair_codes(human, predicted), minlength=9).reshape(3, 3).astype(np.float64)


def kappa_from_confusion(counts: np.ndarray) -> np.ndarray:
    """Cohen's kappa of one or many confusion matrices (shape (..., 3, 3), any non-negative weights).

    kappa = (p_o - p_e) / (1 - p_e), with p_o the observed agreement (the diagonal's share) and p_e
    the agreement expected from the two raters' marginals alone. NaN where p_e = 1 (both raters gave
    one and the same class to everything), as scikit-learn returns.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_o = np.trace(counts, axis1=-2, axis2=-1) / n
        p_e = (counts.sum(axis=-1) * counts.sum(axis=-2)).sum(axis=-1) / n**2
        return (p_o - p_e) / (1 - p_e)


def cohen_kappa(human: np.ndarray, predicted: np.ndarray) -> float:
    """Cohen's kappa between human labels and an evaluator's, three classes (model_a, model_b, tie)."""
    return float(kappa_from_confusion(confusion(human, predicted)))


def accuracy(human: np.ndarray, predicted: np.ndarray) -> float:
    """Share of items where the evaluator's label equals the human one (`MISSING` as `TIE`)."""
    return float(np.mean(human == decided(predicted))) if len(human) else float("nan")


def prefers(labels: np.ndarray, model_a: np.ndarray, model_b: np.ndarray, model: str) -> np.ndarray:
    """Items where `labels` say `model`'s answer won."""
    return ((labels == A) & (model_a == model)) | ((labels == B) & (model_b == model))


def model_agreement_parts(
    human: np.ndarray, predicted: np.ndarray, model_a: np.ndarray, model_b: np.ndarray, model: str
) -> dict[str, np.ndarray]:
    """Indicator vectors behind the paper's per-model agreement and bias score for `model`.

    agreement(m) = Count(evaluator prefers m and humans prefer m) / Count(humans prefer m) (the
    paper's Table 4: how often the evaluator follows the humans when they chose m).
    opponents(m) = the same ratio for m's opponents, over the items where m appears.
    bias(m) = agreement(m) - opponents(m); with two models this is the paper's
    A_Vicuna - A_GPT-3.5: positive means the evaluator leans towards m.
    """
    human_m = prefers(human, model_a, model_b, model)
    involved = (model_a == model) | (model_b == model)
    human_other = involved & ~human_m & (human != TIE)
    pred_m = prefers(predicted, model_a, model_b, model)
    pred_other = involved & ~pred_m & ((predicted == A) | (predicted == B))
    return {
        "agree_num": (human_m & pred_m).astype(np.float64),
        "agree_den": human_m.astype(np.float64),
        "other_num": (human_other & pred_other).astype(np.float64),
        "other_den": human_other.astype(np.float64),
    }


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 (works on scalars and on bootstrap matrices)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def model_agreement(
    human: np.ndarray, predicted: np.ndarray, model_a: np.ndarray, model_b: np.ndarray, model: str
) -> tuple[float, float]:
    """(agreement, bias score) of an evaluator for `model` (see `model_agreement_parts`)."""
    p = model_agreement_parts(human, predicted, model_a, model_b, model)
    agree = ratio(p["agree_num"].sum(), p["agree_den"].sum())
    other = ratio(p["other_num"].sum(), p["other_den"].sum())
    return float(agree), float(agree - other)
