"""The metrics package: kappa, agreement, bias, juries and bootstrap intervals, checked against hand
derivations, scikit-learn and properties that any correct implementation has."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score

from metrics import bootstrap
from metrics.agreement import A, B, MISSING, TIE, accuracy, cohen_kappa, encode, model_agreement
from metrics.judgments import combine_orders, flips
from metrics.jury import all_juries, majority, mean_margin

@st.composite
def two_raters(draw):
    """Human and judge labels over the same 2..60 items."""
    n = draw(st.integers(2, 60))
    rater = st.lists(st.sampled_from([A, B, TIE]), min_size=n, max_size=n)
    return np.array(draw(rater), dtype=np.int8), np.array(draw(rater), dtype=np.int8)


def arr(*codes):
    return np.array(codes, dtype=np.int8)


def test_kappa_by_hand():
    # human:     A A A B B B T T
    # evaluator: A A B B B T T A
    # observed agreement p_o = 5/8 (items 1, 2, 4, 5, 7).
    # marginals: human A 3, B 3, T 2; evaluator A 3, B 3, T 2
    # p_e = (3*3 + 3*3 + 2*2) / 8^2 = 22/64; kappa = (40/64 - 22/64) / (1 - 22/64) = 18/42 = 3/7.
    human = arr(A, A, A, B, B, B, TIE, TIE)
    judge = arr(A, A, B, B, B, TIE, TIE, A)
    assert cohen_kappa(human, judge) == pytest.approx(3 / 7)
    assert accuracy(human, judge) == pytest.approx(5 / 8)


def test_a_missing_verdict_counts_as_a_tie():
    human = arr(A, B, TIE, TIE)
    assert cohen_kappa(human, arr(A, B, MISSING, TIE)) == cohen_kappa(human, arr(A, B, TIE, TIE)) == 1.0
    assert accuracy(human, arr(A, B, MISSING, MISSING)) == 1.0


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@settings(max_examples=200, deadline=None)
@given(two_raters())
def test_kappa_matches_scikit_learn(raters):
    human, judge = raters
    ours = cohen_kappa(human, judge)
    theirs = cohen_kappa_score(human, judge, labels=[A, B, TIE])
    assert (np.isnan(ours) and np.isnan(theirs)) or ours == pytest.approx(theirs)


@settings(max_examples=200, deadline=None)
@given(two_raters())
def test_kappa_properties(raters):
    human, judge = raters
    k = cohen_kappa(human, judge)
    if not np.isnan(k):
        assert -1 - 1e-9 <= k <= 1 + 1e-9
    # symmetric in the two raters
    assert np.isclose(k, cohen_kappa(judge, human), equal_nan=True)
    # item order does not matter
    order = np.random.default_rng(len(human)).permutation(len(human))
    assert np.isclose(k, cohen_kappa(human[order], judge[order]), equal_nan=True)
    # identical raters agree perfectly, as long as they use two classes or more
    if len(set(human.tolist())) > 1:
        assert cohen_kappa(human, human) == pytest.approx(1.0)


def test_per_model_agreement_and_bias_by_hand():
    # Two models as in FairEval: vicuna is model_a, gpt model_b on every item.
    # Humans prefer vicuna on items 0-3 and gpt on items 4-7 (no ties).
    # The judge picks vicuna on 0, 1, 2 (and 4, 5), gpt on 3, 6, 7.
    # agreement(vicuna) = 3/4; agreement(gpt) = 2/4; bias(vicuna) = 3/4 - 2/4 = +0.25, bias(gpt) = -0.25.
    human = arr(A, A, A, A, B, B, B, B)
    judge = arr(A, A, A, B, A, A, B, B)
    model_a = np.array(["vicuna"] * 8)
    model_b = np.array(["gpt"] * 8)
    assert model_agreement(human, judge, model_a, model_b, "vicuna") == pytest.approx((0.75, 0.25))
    assert model_agreement(human, judge, model_a, model_b, "gpt") == pytest.approx((0.5, -0.25))


def test_per_model_agreement_follows_the_model_whichever_side_it_is_on():
    # x wins by human vote on items 0 (as model_a) and 1 (as model_b); the judge agrees on item 1 only.
    human = arr(A, B, A)
    judge = arr(B, B, A)
    model_a = np.array(["x", "y", "y"])
    model_b = np.array(["y", "x", "x"])
    agreement, bias = model_agreement(human, judge, model_a, model_b, "x")
    assert agreement == pytest.approx(1 / 2)
    # y's human wins against x: item 2 only, and the judge agrees: 1/1; bias(x) = 1/2 - 1 = -1/2.
    assert bias == pytest.approx(-0.5)


def test_encode_refuses_unknown_labels():
    assert encode(["model_a", "tie", "model_b"]).tolist() == [A, TIE, B]
    with pytest.raises(ValueError, match="'model_c'"):
        encode(["model_c"])


def test_orders_combine_as_mt_bench_does():
    by_order = np.array([[A, A, B, MISSING, MISSING], [A, B, MISSING, B, MISSING]], dtype=np.int8)
    assert combine_orders(by_order).tolist() == [A, TIE, B, B, MISSING]
    flipped, both = flips(by_order)
    assert flipped.tolist() == [False, True, False, False, False]
    assert both.tolist() == [True, True, False, False, False]


def test_majority_and_mean_juries():
    members = np.array([
        [A, A, A, MISSING, MISSING, TIE],
        [A, B, B, A, MISSING, TIE],
        [B, TIE, MISSING, MISSING, MISSING, A],
    ], dtype=np.int8)
    # item 0: A A B -> A; item 1: A B T -> three-way tie -> TIE; item 2: A B -> TIE; item 3: one vote A;
    # item 4: nobody voted -> MISSING; item 5: T T A -> TIE
    assert majority(members).tolist() == [A, TIE, TIE, A, MISSING, TIE]
    margins = np.array([[0.2, 0.5, np.nan], [-0.1, -0.5, np.nan], [-0.05, 0.1, np.nan]])  # members x items
    # means: +0.05 -> A; +0.1 -> A; no member -> MISSING
    assert mean_margin(margins).tolist() == [A, A, MISSING]


def test_all_juries_are_every_combination_smallest_first():
    juries = all_juries(list("abcdef"))
    assert len(juries) == 63 and juries[0] == ("a",) and juries[-1] == tuple("abcdef")
    assert len(all_juries(list("abcdef"), max_size=2)) == 6 + 15


def test_bootstrap_kappa_interval_equals_explicit_resampling():
    rng = np.random.default_rng(3)
    human = rng.integers(0, 3, 50).astype(np.int8)
    judge = np.where(rng.random(50) < 0.6, human, rng.integers(0, 3, 50)).astype(np.int8)
    w = bootstrap.weights(50, resamples=200, seed=11)
    from metrics.agreement import pair_codes

    low, high = bootstrap.kappa_interval(w, pair_codes(human, judge))
    # the same resamples, spelled out item by item
    explicit = []
    for counts in w.astype(int):
        idx = np.repeat(np.arange(50), counts)
        explicit.append(cohen_kappa_score(human[idx], judge[idx], labels=[A, B, TIE]))
    assert (low, high) == pytest.approx(tuple(np.percentile(explicit, [2.5, 97.5])))
    assert low < cohen_kappa(human, judge) < high


def test_bootstrap_weights_are_seeded_and_resample_every_item_count():
    w = bootstrap.weights(30, resamples=50, seed=5)
    assert np.array_equal(w, bootstrap.weights(30, resamples=50, seed=5))
    assert not np.array_equal(w, bootstrap.weights(30, resamples=50, seed=6))
    assert (w.sum(axis=1) == 30).all()


def test_ratio_interval_of_a_constant_is_the_constant():
    w = bootstrap.weights(20, resamples=100)
    assert bootstrap.ratio_interval(w, np.ones(20), np.ones(20)) == (1.0, 1.0)
    assert all(np.isnan(bootstrap.ratio_interval(w, np.zeros(20), np.zeros(20))))
