import math
from functools import partial

import pytest
import torch
from scipy.stats import mannwhitneyu

from ctsim.engine import BatchedEngine, SequentialEngine
from ctsim.measure.evaluation import (
    METRICS,
    active_generations,
    composite,
    evaluate,
    f1_macro,
    slice_auroc,
    slice_scores,
)
from ctsim.models import MLP, ModelSpec
from ctsim.registry import layout

from .streams import shifted


def test_active_model_is_the_newest_trained_before_the_slice():
    # generations trained at the end of slices 1, 1, 3 and 4 of a 7-slice stream
    assert active_generations([1, 1, 3, 4], 7) == [None, None, 1, 1, 2, 3, 3]
    assert active_generations([], 3) == [None, None, None]
    assert active_generations([0, 1, 2], 3) == [None, 0, 1]


def test_composite_accuracy_on_a_hand_built_matrix():
    matrix = torch.tensor(
        [
            [0.50, 0.90, 0.80, 0.60, 0.40],  # generation 0, trained through slice 0
            [0.40, 0.70, 0.95, 0.85, 0.75],  # generation 1, trained through slice 2
        ],
        dtype=torch.float64,
    )
    active = active_generations([0, 2], 5)
    assert active == [None, 0, 0, 1, 1]
    n = torch.tensor([10, 20, 0, 30, 50])  # slice 2 has no test data
    c = composite(matrix, active, n)
    assert math.isnan(c.per_slice[0]) and math.isnan(c.per_slice[2])
    assert c.per_slice[1] == 0.90 and c.per_slice[3] == 0.85 and c.per_slice[4] == 0.75
    assert c.coverage == 3
    assert c.mean == pytest.approx((0.90 + 0.85 + 0.75) / 3)
    assert c.weighted_mean == pytest.approx((0.90 * 20 + 0.85 * 30 + 0.75 * 50) / 100)


def test_composite_without_any_active_model_is_nan():
    c = composite(torch.ones(1, 2, dtype=torch.float64), [None, None], torch.tensor([5, 5]))
    assert math.isnan(c.mean) and c.coverage == 0


def _f1_reference(pred: list[int], true: list[int]) -> float:
    classes = sorted(set(pred) | set(true))
    scores = []
    for c in classes:
        tp = sum(p == c and t == c for p, t in zip(pred, true))
        fp = sum(p == c and t != c for p, t in zip(pred, true))
        fn = sum(p != c and t == c for p, t in zip(pred, true))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        scores.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return sum(scores) / len(scores)


def test_macro_f1_matches_a_brute_force_reference():
    g = torch.Generator().manual_seed(0)
    preds = torch.randint(3, (6, 40), generator=g)
    labels = torch.randint(3, (40,), generator=g)
    got = f1_macro(preds, labels, num_classes=3)
    for row, value in zip(preds.tolist(), got.tolist()):
        assert value == pytest.approx(_f1_reference(row, labels.tolist()))


def test_slice_scores_split_metrics_by_slice():
    g = torch.Generator().manual_seed(1)
    preds = torch.randint(2, (4, 30), generator=g)
    labels = torch.randint(2, (30,), generator=g)
    seg = torch.sort(torch.randint(4, (30,), generator=g)).values  # slice 4 of 5 stays empty
    acc, f1 = slice_scores(preds, labels, seg, num_slices=5, num_classes=2)
    for s in range(5):
        mask = seg == s
        if not mask.any():
            assert acc[:, s].isnan().all() and f1[:, s].isnan().all()
            continue
        expected_acc = (preds[:, mask] == labels[mask]).double().mean(1)
        assert torch.allclose(acc[:, s], expected_acc)
        assert torch.allclose(f1[:, s], f1_macro(preds[:, mask], labels[mask], 2))


def _auroc_reference(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """One-vs-rest macro AUROC of one model's (n, C) scores, class by class with scipy's Mann-Whitney U."""
    values = []
    for c in labels.unique().tolist():
        pos, neg = scores[labels == c, c], scores[labels != c, c]
        u = mannwhitneyu(pos.numpy(), neg.numpy()).statistic  # U of the positives; ties count one half
        values.append(u / (len(pos) * len(neg)))
    return sum(values) / len(values) if len(values) >= 2 else math.nan


@pytest.mark.parametrize("num_classes", [2, 3])
def test_auroc_per_slice_equals_mann_whitney_u(num_classes):
    g = torch.Generator().manual_seed(num_classes)
    n = 90
    # scores on a coarse grid: many ties, within a class and across classes
    scores = torch.randint(6, (5, n, num_classes), generator=g).double() / 5
    labels = torch.randint(num_classes, (n,), generator=g)
    seg = torch.sort(torch.randint(3, (n,), generator=g)).values
    labels[seg == 2] = 1  # slice 2: one class only; slice 3: no samples
    got = slice_auroc(scores, labels, seg, num_slices=4)
    assert got.shape == (5, 4) and got.dtype == torch.float64
    assert got[:, 2:].isnan().all()
    for s in (0, 1):
        mask = seg == s
        assert len(labels[mask].unique()) == num_classes
        expected = [_auroc_reference(scores[m, mask], labels[mask]) for m in range(5)]
        torch.testing.assert_close(got[:, s], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_auroc_of_perfect_reversed_and_constant_scores():
    labels, seg = torch.tensor([0, 0, 1, 1, 2, 2]), torch.zeros(6, dtype=torch.long)
    perfect = torch.nn.functional.one_hot(labels, 3).double()
    constant = torch.full((6, 3), 1 / 3, dtype=torch.float64)
    got = slice_auroc(torch.stack([perfect, 1 - perfect, constant]), labels, seg, num_slices=1)
    assert got[:, 0].tolist() == [1.0, 0.0, 0.5]


def test_auroc_is_nan_for_a_slice_of_one_class_or_none():
    scores = torch.rand(2, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = slice_auroc(scores, torch.tensor([1, 1, 0, 1]), torch.tensor([0, 0, 1, 1]), num_slices=3)
    assert got[:, 0].isnan().all() and got[:, 2].isnan().all() and not got[:, 1].isnan().any()


def test_the_evaluation_metrics_are_the_evals_tables():
    assert METRICS == layout.METRICS


@pytest.mark.parametrize(
    "engine",
    [
        SequentialEngine(device="cpu", dtype="float64"),
        BatchedEngine(device="cpu", dtype="float64", route="loop"),
        BatchedEngine(device="cpu", dtype="float64", route="vmap", eval_batch_size=16),
    ],
    ids=["sequential", "loop", "vmap"],
)
def test_evaluate_predicts_the_argmax_of_the_logits_and_scores_their_softmax(engine):
    stream = shifted(slices=4, per_slice=40)
    spec = ModelSpec(partial(MLP, hidden=[8]), stream.input_shape, 2)
    states = [spec.build(seed=s, dtype=torch.float64).state_dict() for s in range(3)]
    keys = torch.cat(stream.test_keys)
    x, y, seg = stream.x[keys].double(), stream.y[keys], stream.slice[keys]
    net = spec.build(dtype=torch.float64).eval()
    logits = []
    for state in states:
        net.load_state_dict(state)
        with torch.no_grad():
            logits.append(net(x))
    logits = torch.stack(logits)

    predicted = engine.predict(spec, states, x)
    assert torch.equal(predicted.classes, logits.argmax(-1))  # the predictions as they always were
    torch.testing.assert_close(predicted.logits, logits, rtol=1e-12, atol=1e-12)

    ev = evaluate(engine, stream, [spec] * 3, states, chunk=2)
    acc, f1 = slice_scores(logits.argmax(-1), y, seg, stream.num_slices, 2)
    auroc = slice_auroc(torch.softmax(logits, -1), y, seg, stream.num_slices)
    assert torch.equal(ev.accuracy, acc) and torch.equal(ev.macro_f1, f1)
    torch.testing.assert_close(ev.auroc, auroc, rtol=0, atol=1e-12)
    assert not ev.auroc.isnan().any() and ((ev.auroc >= 0) & (ev.auroc <= 1)).all()
    assert list(ev.metrics) == list(METRICS)
