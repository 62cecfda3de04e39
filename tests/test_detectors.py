"""Drift detectors (ctsim.triggers.detectors) and decision rules (ctsim.triggers.rules).

Detectors: power on seeded Gaussian shifts, false-alarm rates under no shift held to a binomial bound,
statistics equal to scipy's or to a plain reference implementation, the batched MMD equal to the
one-pair MMD. Rules: hand-built sequences with known decisions, and state that survives JSON.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import stats

from ctsim.triggers.detectors import (
    DETECTORS,
    KS,
    MMD,
    CvM,
    Energy,
    LabelShift,
    Result,
    Wasserstein,
    make_detector,
    mmd_many,
)
from ctsim.triggers.rules import (
    RULES,
    DynamicQuantile,
    DynamicRollingAverage,
    PValue,
    Threshold,
    make_rule,
)
from ctsim.validation import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf" / "trigger"
FEATURES = ["mmd", "ks", "cvm", "energy", "wasserstein"]
PERMUTATION_TESTS = {"mmd", "energy", "wasserstein"}


def detector(name: str, permutations: int = 200):
    return (
        make_detector(name, permutations=permutations) if name in PERMUTATION_TESTS else make_detector(name)
    )


def gaussians(seed: int, shift: float = 0.0, features: slice = slice(None), n: int = 200, d: int = 4):
    """Two standard normal windows (n, d); ``shift`` (in σ) added to the current window's ``features``."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    y[:, features] += shift
    return x, y


def alarm_bound(trials: int, alpha: float) -> int:
    """The most alarms a test of level ``alpha`` gives in ``trials`` independent null trials, but for
    a 1-in-1000 chance: the binomial's 99.9% quantile (a conservative test only lowers the count)."""
    return int(stats.binom.ppf(0.999, trials, alpha))


# -- power and false alarms ----------------------------------------------------------------------
@pytest.mark.parametrize("name", FEATURES)
def test_fires_on_a_one_sigma_shift_of_every_feature(name):
    det = detector(name)
    shifted = det.compare(*gaussians(0, shift=1.0), torch.Generator().manual_seed(1))
    same = det.compare(*gaussians(0), torch.Generator().manual_seed(1))
    assert shifted.p_value < 0.05
    assert shifted.distance > same.distance


@pytest.mark.parametrize("name", FEATURES)
def test_fires_on_a_one_sigma_shift_of_one_feature_in_four(name):
    # KS and CvM multiply the smallest of 4 p-values by 4 (Bonferroni) and must still fire.
    result = detector(name).compare(*gaussians(2, shift=1.0, features=slice(0, 1)), torch.Generator())
    assert result.p_value < 0.05


@pytest.mark.parametrize("name", FEATURES)
def test_false_alarms_without_shift_stay_within_alpha(name):
    # Under no shift each p < alpha is a Bernoulli(≤ alpha) trial, independent across seeds: more alarms
    # than the binomial's 99.9% quantile would happen by chance once in 1000 (and the seeds are fixed).
    trials, alpha = (100 if name in PERMUTATION_TESTS else 200), 0.05
    det = detector(name, permutations=100)
    p = np.array(
        [det.compare(*gaussians(seed), torch.Generator().manual_seed(seed)).p_value for seed in range(trials)]
    )
    assert (p < alpha).sum() <= alarm_bound(trials, alpha)
    if name in PERMUTATION_TESTS:
        # A permutation p-value is (nearly) uniform under no shift, not merely conservative: about half
        # fall at or below 0.5, within the binomial's 0.1% and 99.9% quantiles.
        low, high = stats.binom.ppf([0.001, 0.999], trials, 0.5)
        assert low <= (p <= 0.5).sum() <= high


def test_label_shift_fires_when_proportions_move_from_half_to_80_percent():
    g = torch.Generator().manual_seed(0)
    before = torch.bernoulli(torch.full((200,), 0.5), generator=g).long()
    after = torch.bernoulli(torch.full((200,), 0.2), generator=g).long()
    assert LabelShift().compare(before, after, g).p_value < 0.05
    assert LabelShift().compare(before, before.flip(0), g).p_value == 1.0  # the same counts


def test_label_shift_false_alarms_stay_within_alpha():
    trials, alpha = 200, 0.05  # the binomial bound as for the feature detectors
    probs = torch.tensor([0.5, 0.3, 0.2])
    alarms = 0
    for seed in range(trials):
        g = torch.Generator().manual_seed(seed)
        labels = torch.multinomial(probs, 400, replacement=True, generator=g)
        alarms += LabelShift().compare(labels[:200], labels[200:], g).p_value < alpha
    assert alarms <= alarm_bound(trials, alpha)


# -- statistics equal scipy's / a reference -----------------------------------------------------------
def test_ks_and_cvm_are_scipys_per_feature_tests_combined():
    x, y = gaussians(3, shift=0.3, features=slice(1, 3))
    xs, ys = x.double().numpy(), y.double().numpy()
    for det, test in ((KS(), stats.ks_2samp), (CvM(), stats.cramervonmises_2samp)):
        per_feature = [test(xs[:, j], ys[:, j]) for j in range(4)]
        p = np.array([t.pvalue for t in per_feature])
        result = det.compare(x, y, torch.Generator())
        assert result.distance == pytest.approx(max(t.statistic for t in per_feature), rel=1e-12)
        assert result.p_value == pytest.approx(min(1.0, 4 * p.min()), rel=1e-9)
        bh = type(det)(correction="fdr_bh").compare(x, y, torch.Generator())
        assert bh.p_value == pytest.approx(
            min(p[i] * 4 / (r + 1) for r, i in enumerate(np.argsort(p))), rel=1e-9
        )
        assert bh.p_value <= result.p_value


@pytest.mark.parametrize(
    ("cls", "scipy_distance"), [(Energy, stats.energy_distance), (Wasserstein, stats.wasserstein_distance)]
)
def test_energy_and_wasserstein_are_scipys_per_feature_distances_averaged(cls, scipy_distance):
    x, y = gaussians(4, shift=0.5, n=50, d=3)
    y = y[:37]
    y[:10] = y[:10].round()  # ties, within and across windows
    x[:10] = x[:10].round()
    expected = np.mean([scipy_distance(x[:, j].double(), y[:, j].double()) for j in range(3)])
    assert cls(permutations=0).compare(x, y, torch.Generator()).distance == pytest.approx(expected, rel=1e-12)


def test_energy_p_value_is_the_share_of_seeded_permutations_at_least_as_far():
    """The documented p-value; permutations: ``torch.rand(P, n + m)`` keys from the generator, argsorted."""
    x, y = gaussians(5, shift=0.3, n=30, d=2)
    permutations = 40
    result = Energy(permutations).compare(x, y, torch.Generator().manual_seed(7))
    z = torch.cat([x, y]).double().numpy()
    keys = torch.rand(permutations, 60, generator=torch.Generator().manual_seed(7))
    orders = keys.numpy().argsort(1, kind="stable")

    def distance(a, b):
        return np.mean([stats.energy_distance(a[:, j], b[:, j]) for j in range(2)])

    observed = distance(z[:30], z[30:])
    permuted = np.array([distance(z[o[:30]], z[o[30:]]) for o in orders])
    assert result.p_value == ((permuted >= observed).sum() + 1) / (permutations + 1)
    assert 0.05 < result.p_value < 0.95  # a p-value that tells permutations apart


def mmd_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD², Gaussian kernel, σ² = the lower median squared distance of the pooled rows."""
    z = np.concatenate([x, y])
    n, m, total = len(x), len(y), len(x) + len(y)
    d2 = np.array([[np.sum((z[i] - z[j]) ** 2) for j in range(total)] for i in range(total)])
    upper = np.sort(d2[np.triu_indices(total, 1)])
    k = np.exp(-d2 / (2 * upper[(len(upper) - 1) // 2]))
    xx = sum(k[i, j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k[i, j] for i in range(n, total) for j in range(n, total) if i != j) / (m * (m - 1))
    return xx + yy - 2 * k[:n, n:].mean()


@pytest.mark.parametrize(("shift", "n", "m"), [(0.0, 40, 40), (0.7, 50, 30)])
def test_mmd_equals_the_reference_formula(shift, n, m):
    x, y = gaussians(6, shift=shift, n=max(n, m), d=3)
    x, y = x[:n].double() * 3 + 5, y[:m].double() * 3 + 5  # off the origin: the centring matters
    expected = mmd_reference(x.numpy(), y.numpy())
    assert MMD(permutations=0).compare(x, y, torch.Generator()).distance == pytest.approx(expected, rel=1e-9)
    got32 = MMD(permutations=0).compare(x.float(), y.float(), torch.Generator()).distance
    assert got32 == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mmd_kernel_is_the_written_out_formula_bit_for_bit(dtype):
    """The kernel is computed in fewer passes (in place, one fused product-and-add) than written out
    below; the values must be the same to the last bit, or MMD decisions could move."""
    from ctsim.triggers.detectors import _gaussian_kernel, _gaussian_kernel_batched

    g = torch.Generator().manual_seed(11)
    z = torch.randn(3, 300, 16, generator=g, dtype=dtype) * 2 + 1
    z = z - z.mean(dim=1, keepdim=True)

    def written_out(z):
        norms = (z * z).sum(dim=-1)
        d2 = (norms[:, None] + norms[None, :] - 2 * z @ z.T).clamp_min(0) * (
            1 - torch.eye(len(z), dtype=dtype)
        )
        i, j = torch.triu_indices(len(z), len(z), offset=1)
        return torch.exp(-d2 / (2 * d2[i, j].median()))

    for b in range(3):
        assert torch.equal(_gaussian_kernel(z[b]), written_out(z[b]))
    batched = _gaussian_kernel_batched(z, [300, 300, 300])
    assert all(torch.equal(batched[b], written_out(z[b])) for b in range(3))


@pytest.mark.parametrize(
    ("n", "m", "ties"), [(200, 40, False), (60, 90, False), (150, 30, True), (2, 2, False)]
)
def test_mmd_against_a_fixed_reference_is_the_same_statistic(n, m, ties):
    """A reference kept across tests (reference: trained) gives MMD(0)'s distance, also with tied
    distances; its bandwidth is the pooled sample's lower median found without pooling."""
    from ctsim.triggers.detectors import FixedReference, _merged_lower_median

    g = torch.Generator().manual_seed(n + m)
    ref = torch.randn(n, 4, generator=g, dtype=torch.float64) * 2 + 3
    fixed = FixedReference(ref if not ties else ref.round())
    for shift in (0.0, 0.5, 2.0):
        cur = torch.randn(m, 4, generator=g, dtype=torch.float64) * 2 + 3 + shift
        cur = cur.round() if ties else cur
        expected = MMD(0).compare(fixed.z + fixed.mean, cur, g).distance
        assert fixed.distance(cur) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert FixedReference(ref.float()).distance(cur.float()) == pytest.approx(
            MMD(0).compare(ref.float(), cur.float(), g).distance, abs=1e-6
        )
    for size_a, size_b in [(50, 7), (7, 50), (1, 1), (10, 0), (300, 301), (1000, 40)]:
        for values in (5, 10**6):  # many ties, few
            a = torch.randint(0, values, (size_a,), generator=g).double().sort().values
            b = torch.randint(0, values, (size_b,), generator=g).double()  # in any order
            assert _merged_lower_median(a, b) == torch.cat([a, b]).median()
    b[0] = float("nan")
    assert torch.isnan(_merged_lower_median(a, b))  # as torch.median


def test_the_kth_value_of_two_sorted_tensors_is_found_by_bisection_with_ties_and_empty_sides():
    from ctsim.triggers.detectors import _kth_of_two_sorted

    g = torch.Generator().manual_seed(7)
    for _ in range(2000):
        p, q = (int(v) for v in torch.randint(0, 25, (2,), generator=g))
        if p + q == 0:
            continue
        a = torch.randint(0, 5, (p,), generator=g).float().sort().values
        b = torch.randint(0, 5, (q,), generator=g).float().sort().values
        k = int(torch.randint(0, p + q, (1,), generator=g))
        assert _kth_of_two_sorted(a, b, k) == torch.cat([a, b]).sort().values[k], (a, b, k)


def test_a_kept_reference_holds_a_small_middle_and_gives_the_statistic_for_any_window(monkeypatch):
    """A kept reference keeps its pairs as binned moments and only the middle bins' values: windows
    of growing sizes widen the kept middle and still give MMD(0)'s distance; a bandwidth too small
    for the bins' series takes the exact sum over the pairs; the lower median of a kept middle slice
    is the whole's."""
    from ctsim.triggers import detectors
    from ctsim.triggers.detectors import FixedReference, _merged_lower_median

    g = torch.Generator().manual_seed(11)
    ref = torch.randn(1500, 6, generator=g, dtype=torch.float64)
    ref[:40] *= 30  # a few far outliers: many empty bins between the bulk and them
    fixed = FixedReference(ref)
    for m, shift in [(20, 0.0), (200, 0.3), (700, 1.0), (5, 3.0)]:
        cur = torch.randn(m, 6, generator=g, dtype=torch.float64) + shift
        expected = MMD(0).compare(ref, cur, g).distance
        assert fixed.distance(cur) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        if m == 20:  # 30,000 current-share pairs against the reference's 1,124,250
            assert len(fixed.kept[1]) < fixed.pairs / 5  # the middle bins alone, not the n²/2 pairs
    monkeypatch.setattr(detectors, "BIN_SHARE", 2.0)  # bins as wide as twice the median: series too coarse
    coarse = FixedReference(ref)
    cur = torch.randn(50, 6, generator=g, dtype=torch.float64) + 0.5
    assert coarse.distance(cur) == pytest.approx(MMD(0).compare(ref, cur, g).distance, rel=1e-12, abs=1e-15)
    assert torch.isnan(torch.tensor(FixedReference(ref.clone().fill_(float("nan"))).distance(cur)))

    values = torch.randint(0, 40, (900,), generator=g).double().sort().values  # many ties
    b = torch.randint(0, 40, (60,), generator=g).double()
    whole = torch.cat([values, b]).median()
    k = (900 + 60 - 1) // 2
    lo, hi = int((values < values[k - 60]).sum()), int((values <= values[k]).sum())  # whole tie groups
    assert _merged_lower_median(values[lo:hi], b, offset=lo, total=900) == whole


def test_large_windows_are_tested_within_a_memory_budget_with_the_same_results(monkeypatch):
    """Passes of at most PASS_ENTRIES kernel entries: a group of large windows is split (each pass
    holds fewer pairs), a kept reference is built a block of rows at a time; the results stay."""
    from ctsim.triggers import detectors

    pairs = windows_of_several_sizes()
    whole = mmd_many(pairs, 50, torch.Generator().manual_seed(4))
    ref = torch.randn(90, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cur = ref[:30] + 0.3
    kept = detectors.FixedReference(ref).distance(cur)
    monkeypatch.setattr(detectors, "PASS_ENTRIES", 80**2)
    totals = [len(r) + len(c) for r, c in pairs]
    assert all(
        len(g) * max(totals[b] for b in g) ** 2 <= 80**2 or len(g) == 1 for g in detectors._groups(totals)
    )
    split = mmd_many(pairs, 50, torch.Generator().manual_seed(4))
    assert [r.p_value for r in split] == [r.p_value for r in whole]
    assert [r.distance for r in split] == pytest.approx([r.distance for r in whole], rel=1e-5, abs=1e-6)
    assert detectors.FixedReference(ref).distance(cur) == pytest.approx(kept, rel=1e-12)  # 40 rows a block


def test_a_drift_trigger_decides_the_same_with_and_without_a_kept_reference(monkeypatch):
    """reference: trained with a distance rule takes the kept reference's path; switched off, the
    full kernel gives the same decisions and distances."""
    from ctsim.stream import toy_stream
    from ctsim.triggers import DriftTrigger, detectors, replay
    from ctsim.triggers.encoders import RawFeatures
    from ctsim.triggers.rules import Threshold

    def run():
        stream = toy_stream([60] * 8, arrival_batch=20)
        stream.x[:] = torch.randn(stream.x.shape, generator=torch.Generator().manual_seed(5))
        stream.x[300:] += 0.8
        trigger = DriftTrigger(
            encoder=RawFeatures(),
            rule=Threshold(value=0.02),
            reference="trained",
            interval=40,
            min_samples=10,
        )
        return replay(trigger, stream), trigger.distances

    calls = []
    distance = detectors.FixedReference.distance
    monkeypatch.setattr(
        detectors.FixedReference, "distance", lambda self, c: calls.append(1) or distance(self, c)
    )
    fired, distances = run()
    assert calls and 300 // 20 <= fired[1] <= 300 // 20 + 2  # the kept reference was used; the shift found
    monkeypatch.setattr(DriftTrigger, "_fixed_reference", lambda self, ctx, ref: None)
    fired_full, distances_full = run()
    assert fired == fired_full
    assert [d[0] for d in distances] == [d[0] for d in distances_full]
    # float32 features: kernel sums of order 1 round at ~1e-7
    assert [d[1] for d in distances] == pytest.approx([d[1] for d in distances_full], rel=1e-5, abs=1e-6)


def test_mmd_p_value_is_the_share_of_seeded_permutations_at_least_as_far():
    x, y = (t.double() for t in gaussians(8, shift=0.4, n=20, d=2))
    permutations = 30
    result = MMD(permutations).compare(x, y, torch.Generator().manual_seed(3))
    z = torch.cat([x, y]).numpy()
    keys = torch.rand(permutations, 40, generator=torch.Generator().manual_seed(3))
    orders = keys.numpy().argsort(1, kind="stable")
    observed = mmd_reference(z[:20], z[20:])
    permuted = np.array([mmd_reference(z[o[:20]], z[o[20:]]) for o in orders])
    assert result.distance == pytest.approx(observed, rel=1e-9)
    assert result.p_value == ((permuted >= observed - 1e-12).sum() + 1) / (permutations + 1)
    assert 0.05 < result.p_value < 0.95


def windows_of_several_sizes(device: str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(9)
    sizes = [(30, 40, 3), (25, 25, 3), (50, 12, 5), (2, 2, 1)]
    return [
        (torch.randn(n, d, generator=g).to(device), (torch.randn(m, d, generator=g) + 0.5 * i).to(device))
        for i, (n, m, d) in enumerate(sizes)
    ]


def test_mmd_many_equals_compare_on_each_pair():
    pairs = windows_of_several_sizes()
    batched = mmd_many(pairs, 50, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    one_by_one = [MMD(50).compare(r, c, g) for r, c in pairs]
    assert [r.p_value for r in batched] == [r.p_value for r in one_by_one]
    assert [r.distance for r in batched] == pytest.approx(
        [r.distance for r in one_by_one], rel=1e-5, abs=1e-6
    )
    assert len({r.p_value for r in batched}) > 1  # the pairs differ: not one value broadcast
    assert MMD(50).compare_many(pairs, torch.Generator().manual_seed(4)) == batched
    assert mmd_many([], 50, torch.Generator()) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mmd_on_cuda_equals_cpu():
    cpu, cuda = windows_of_several_sizes(), windows_of_several_sizes("cuda")
    expected = [MMD(50).compare(r, c, torch.Generator().manual_seed(i)) for i, (r, c) in enumerate(cpu)]
    got = [MMD(50).compare(r, c, torch.Generator().manual_seed(i)) for i, (r, c) in enumerate(cuda)]
    assert [r.distance for r in got] == pytest.approx([r.distance for r in expected], rel=1e-4, abs=1e-5)
    assert [r.p_value for r in got] == [r.p_value for r in expected]
    batched = mmd_many(cuda, 50, torch.Generator().manual_seed(0))
    loop = mmd_many(cpu, 50, torch.Generator().manual_seed(0))
    assert [r.distance for r in batched] == pytest.approx([r.distance for r in loop], rel=1e-4, abs=1e-5)


def test_label_shift_is_scipys_chi2_over_the_classes_seen():
    reference = torch.tensor([2] * 30 + [5] * 20 + [9] * 10)
    current = torch.tensor([2] * 10 + [9] * 25)  # class 5 absent here; classes 0, 1, 3, ... absent in both
    table = np.array([[30, 20, 10], [10, 0, 25]])
    test = stats.chi2_contingency(table, correction=False)
    result = LabelShift().compare(reference, current, torch.Generator())
    assert result.distance == pytest.approx(test.statistic / 95, rel=1e-12)
    assert result.p_value == pytest.approx(test.pvalue, rel=1e-12)
    two = LabelShift().compare(
        torch.tensor([0] * 30 + [1] * 20), torch.tensor([0] * 20 + [1] * 30), torch.Generator()
    )
    plain = stats.chi2_contingency([[30, 20], [20, 30]], correction=False)  # no Yates correction at 2 × 2
    assert two.distance == pytest.approx(plain.statistic / 100, rel=1e-12)
    one_class = LabelShift().compare(torch.full((5,), 3), torch.full((8,), 3), torch.Generator())
    assert one_class == Result(0.0, 1.0)


# -- conformance over every detector ------------------------------------------------------------
@pytest.mark.parametrize("name", FEATURES)
def test_deterministic_given_the_generator_and_leaves_inputs_alone(name):
    x, y = gaussians(10, shift=0.1, n=40)
    before = (x.clone(), y.clone())
    first = detector(name, 50).compare(x, y, torch.Generator().manual_seed(5))
    assert detector(name, 50).compare(x, y, torch.Generator().manual_seed(5)) == first
    assert torch.equal(x, before[0]) and torch.equal(y, before[1])
    if name in PERMUTATION_TESTS:
        assert detector(name, 0).compare(x, y, torch.Generator()).p_value is None


@pytest.mark.parametrize("name", FEATURES)
def test_constant_features_give_finite_results(name):
    x, y = torch.ones(20, 3), torch.ones(30, 3)
    x[:, 0] = torch.arange(20.0)  # one varying feature, two constant
    for reference, current in ((x, y), (torch.ones(20, 3), torch.ones(30, 3))):
        result = detector(name, 20).compare(reference, current, torch.Generator())
        assert np.isfinite(result.distance) and np.isfinite(result.p_value)
    assert result.p_value == 1.0  # all constant and equal: nothing to detect


@pytest.mark.parametrize("name", [*FEATURES, "label"])
def test_fewer_than_two_samples_is_an_error(name):
    def window(n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=torch.long) if name == "label" else torch.zeros(n, 2)

    det = make_detector(name)
    with pytest.raises(ValueError, match="the reference window has 1 samples; a test needs at least 2"):
        det.compare(window(1), window(5), torch.Generator())
    with pytest.raises(ValueError, match="the current window has 1 samples"):
        det.compare(window(5), window(1), torch.Generator())


@pytest.mark.parametrize(("group", "names"), [("detector", DETECTORS), ("rule", RULES)])
def test_every_config_name_has_its_yaml(group, names):
    targets = {f.stem: OmegaConf.load(f)["_target_"] for f in (CONF / group).glob("*.yaml")}
    assert targets == {name: f"{cls.__module__}.{cls.__name__}" for name, cls in names.items()}


# -- rules --------------------------------------------------------------------------------------
def decisions(rule, distances=(), p_values=None) -> list[bool]:
    p_values = p_values or [None] * len(distances)
    distances = distances or [0.0] * len(p_values)
    return [rule.decide(Result(d, p)) for d, p in zip(distances, p_values)]


def test_threshold_fires_above_the_value_after_warmup():
    assert decisions(Threshold(0.5, warmup=2), [0.9, 0.9, 0.9, 0.5, 0.2, 0.51]) == [0, 0, 1, 0, 0, 1]


def test_pvalue_fires_below_alpha_after_warmup():
    assert decisions(PValue(0.05, warmup=1), p_values=[0.01, 0.01, 0.06, 0.049, 0.05]) == [0, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="permutations > 0"):
        PValue().decide(Result(0.3, None))


def test_dynamic_quantile_against_the_window_before_each_distance():
    # quantile 1: above the window's max; history [3] [3,1] [1,2] [2,2.5] [2.5,4] [4,1] (fires keep it)
    rule = DynamicQuantile(quantile=1.0, window=2)
    assert decisions(rule, [3, 1, 2, 2.5, 4, 1, 1.5]) == [0, 0, 0, 1, 1, 0, 0]
    assert rule.history == [1.0, 1.5]
    # the median interpolates: [1,2,3,4] → 2.5 < 2.6; [2,3,4,2.6] → 2.8 > 2.4
    assert decisions(DynamicQuantile(0.5, window=4), [1, 2, 3, 4, 2.6, 2.4]) == [0, 1, 1, 1, 1, 0]
    # warm-up records without firing: 5 would fire after [1]
    assert decisions(DynamicQuantile(1.0, window=5, warmup=2), [1, 5, 3, 6]) == [0, 0, 0, 1]


def test_dynamic_rolling_average_relative_absolute_and_warmup():
    # relative, window 2: means 1, 1.1, 1.45; margins 0.5 · mean
    assert decisions(DynamicRollingAverage(2, 0.5), [1.0, 1.2, 1.7, 2.0]) == [0, 0, 1, 0]
    # absolute 1, window 2: 2.5 - 1 fires; 1 - 1.75 no; 3 - 1.75 fires; 2 - 2 no; 3 - 2.5 no
    assert decisions(DynamicRollingAverage(2, 1.0, absolute=True), [1, 2.5, 1, 3, 2, 3]) == [0, 1, 0, 1, 0, 0]
    assert decisions(DynamicRollingAverage(2, 1.0, absolute=True), [2, 3]) == [0, 0]  # exceed, not reach
    # relative to |mean| for a negative mean (unbiased MMD): margin 0.1 around -0.2
    assert decisions(DynamicRollingAverage(1, 0.5), [-0.2, -0.05]) == [0, 1]
    assert decisions(DynamicRollingAverage(1, 0.5), [-0.2, -0.15]) == [0, 0]
    # warm-up records without firing: 4 would fire after [1]
    assert decisions(DynamicRollingAverage(3, 0.5, warmup=2), [1, 4, 3, 9]) == [0, 0, 0, 1]


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "match"),
    [
        (
            lambda: make_detector("kl"),
            r"detector='kl': expected one of mmd, ks, cvm, energy, wasserstein, label",
        ),
        (lambda: make_rule("median"), r"rule='median': expected one of threshold, pvalue, quantile, rolling"),
        (lambda: PValue(alpha=0), r"alpha=0: expected a number in \(0, 1\)"),
        (lambda: PValue(alpha=1.5), r"alpha=1.5: expected a number in \(0, 1\)"),
        (lambda: Threshold(value=-0.1), r"value=-0.1: expected a number ≥ 0"),
        (lambda: DynamicQuantile(quantile=0), r"quantile=0: expected a number in \(0, 1\]"),
        (lambda: DynamicQuantile(window=0), r"window=0: expected an integer ≥ 1"),
        (lambda: DynamicRollingAverage(window=0), r"window=0: expected an integer ≥ 1"),
        (lambda: DynamicRollingAverage(deviation=-1), r"deviation=-1: expected a number ≥ 0"),
        (lambda: Threshold(0.1, warmup=-1), r"warmup=-1: expected an integer ≥ 0"),
        (lambda: MMD(permutations=-5), r"permutations=-5: expected an integer ≥ 0"),
        (lambda: Energy(permutations=2.5), r"permutations=2.5: expected an integer ≥ 0"),
        (lambda: KS(correction="holm"), r"correction='holm': expected one of \['bonferroni', 'fdr_bh'\]"),
    ],
)
def test_bad_settings_name_the_key(build, match):
    with pytest.raises(ConfigError, match=match):
        build()


def test_factories_build_with_options():
    assert make_detector("wasserstein", permutations=7).permutations == 7
    assert isinstance(make_detector("label"), LabelShift)
    assert make_rule("rolling", window=3, absolute=True).absolute is True
