import math

import pytest
import torch

from ctsim.evaluation import active_generations, composite, f1_macro, slice_scores


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
