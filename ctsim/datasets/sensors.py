"""Sensors: machine sensor windows, a small multivariate time series dataset with drift by design.

Each sample is one day of hourly readings from one machine of a growing fleet: 24 steps × 4 channels
(vibration, bearing temperature, motor current, ambient temperature), labelled normal, wear or fault.
There is one slice per month, 2021-01 to 2024-04 (40 slices), with 3,026 windows at full size;
the fleet grows and is busier in winter, so per-month counts vary from 42 to 112. It is the sequence
counterpart of portraits, for the recurrent models (``model=lstm``, ``model=gru``), and is generated
in milliseconds.

What carries the class, and what drifts (full story in ``datasets/sensors.md``):

* **Vibration level (label cue whose meaning shifts, abrupt, 2023-01).** Hourly vibration RMS sits
  near 0.5 for normal machines, 1.0 for worn and 1.6 for faulty ones. In 2023-01 every vibration sensor
  is replaced by a model with half the sensitivity: a worn machine now reads 0.5, what a healthy one
  read before. Models trained only before the change fall from about 0.9 accuracy to about chance.
* **Machine ageing (gradual covariate drift, 2021-01 to 2024-04).** Sensor noise grows from 0.1 to
  0.3 on every channel and the bearing temperature baseline rises by 0.8.
* **Heating and current surges (weaker, stable cues).** Bearings of worn and faulty machines heat up
  over the day (by 0.5 and 1.0 on average, with a spread of 0.35), and 60% of fault windows show a
  current surge (10% of the others show a harmless start-up surge), in every month. Alone they give
  about 0.6 accuracy.
* **Seasons and sites (no label information).** Ambient temperature follows the year and differs
  between the machines' sites; a fifth of it reaches the bearing temperature. Bearing baselines differ
  between machines, so the cue is the rise over the day, not the level.

Example:
    >>> ds = Sensors(size=0.5, seed=0)
    >>> samples = ds.load()
    >>> tuple(samples.x.shape[1:]), samples.num_classes, len(samples.slice_labels), ds.slice_labels[24]
    ((24, 4), 3, 40, '2023-01')
    >>> sum(monthly_counts())
    3026
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ctsim.datasets.base import (
    ChangePoint,
    Samples,
    cache_folder_problems,
    generator_problems,
    load_generated,
)
from ctsim.validation import ConfigError, Problem

FIRST_YEAR, NUM_MONTHS = 2021, 40
MONTHS = tuple(f"{FIRST_YEAR + m // 12}-{m % 12 + 1:02d}" for m in range(NUM_MONTHS))
SEQ_LEN = 24  # hourly readings over one day
CHANNELS = ("vibration", "bearing temperature", "motor current", "ambient temperature")
CLASSES = ("normal", "wear", "fault")
MIN_PER_SLICE = 10  # keeps at least one test sample per slice at any size
VERSION = 1  # bump when the generator changes: it invalidates caches

REPLACEMENT_MONTH = "2023-01"
VIBRATION_LEVEL = (0.5, 1.0, 1.6)  # hourly vibration RMS per class, old sensors
NEW_SENSOR_GAIN = 0.5  # the replacement sensors' sensitivity relative to the old ones
HEATING = (0.0, 0.5, 1.0)  # mean bearing temperature rise over the day per class
HEATING_SPREAD = 0.35
P_SURGE = (0.1, 0.1, 0.6)  # P(current surge | class)
NOISE = (0.1, 0.3)  # sensor noise std in the first and in the last month
BEARING_AGEING = 0.8  # bearing temperature baseline rise over the whole period
SEASON = 0.6  # amplitude of the yearly ambient temperature cycle
SEASON_LEAK = 0.2  # share of the ambient temperature that reaches the bearing temperature
SITE_SPREAD = 0.5  # std of the ambient temperature across machines' sites
MACHINE_SPREAD = 0.5  # std of the bearing temperature baseline across machines


def monthly_counts() -> list[int]:
    """Windows per month at full size: a growing fleet (45 → 105 machines), busier in winter.

    >>> c = monthly_counts()
    >>> len(c), min(c), max(c), c[0] < c[-1]
    (40, 42, 112, True)
    """
    return [
        round(45 + 60 * m / (NUM_MONTHS - 1) + 12 * math.cos(2 * math.pi * m / 12)) for m in range(NUM_MONTHS)
    ]


def scaled_counts(size: float) -> list[int]:
    """Per-month counts at a size factor: ``max(10, round(count × size))``.

    >>> scaled_counts(1.0) == monthly_counts(), min(scaled_counts(0.01))
    (True, 10)
    """
    return [max(MIN_PER_SLICE, round(c * size)) for c in monthly_counts()]


def ageing(month: torch.Tensor) -> torch.Tensor:
    """0 in the first month, 1 in the last, linear in between."""
    return month / (NUM_MONTHS - 1)


CHANGE_POINTS = (
    ChangePoint(
        slice=MONTHS.index(REPLACEMENT_MONTH),
        kind="abrupt",
        what=f"vibration sensors replaced by ones with {NEW_SENSOR_GAIN:g}× the sensitivity: worn machines "
        f"now read {NEW_SENSOR_GAIN * VIBRATION_LEVEL[1]:g}, the level that meant normal before, and faulty "
        f"ones {NEW_SENSOR_GAIN * VIBRATION_LEVEL[2]:g} instead of {VIBRATION_LEVEL[2]:g}",
    ),
    ChangePoint(
        slice=0,
        end_slice=NUM_MONTHS - 1,
        kind="gradual",
        what=f"machine ageing: sensor noise std grows from {NOISE[0]:g} to {NOISE[1]:g} on every channel "
        f"and the bearing temperature baseline rises by {BEARING_AGEING:g}",
    ),
    ChangePoint(
        slice=0,
        end_slice=NUM_MONTHS - 1,
        kind="gradual",
        what=f"seasons (no label information): ambient temperature swings ±{SEASON:g} over every year, "
        f"and {SEASON_LEAK:g} of it reaches the bearing temperature",
    ),
)


def generate(month: torch.Tensor, label: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One day of readings per (month, label) pair as a ``(n, 24, 4)`` float32 tensor."""
    n = len(month)
    m = month.to(torch.float32).view(n, 1)
    hour = torch.arange(SEQ_LEN, dtype=torch.float32).view(1, SEQ_LEN)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(n, *shape, generator=generator)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(n, *shape, generator=generator)

    def per_class(values: tuple[float, ...]) -> torch.Tensor:
        return torch.tensor(values)[label].view(n, 1)

    noise = NOISE[0] + (NOISE[1] - NOISE[0]) * ageing(m)
    # Motor load: a day shift, from a random start hour, at a machine-specific level.
    shift_start = 5 + 3 * uniform(1)
    load = (
        (0.6 + 0.2 * normal(1))
        * torch.sigmoid(2 * (hour - shift_start))
        * torch.sigmoid(2 * (shift_start + 14 - hour))
    )

    level = per_class(VIBRATION_LEVEL) * torch.exp(0.12 * normal(1))
    gain = torch.where(m >= MONTHS.index(REPLACEMENT_MONTH), NEW_SENSOR_GAIN, 1.0)
    vibration = gain * level * (0.8 + 0.4 * load) + noise * normal(SEQ_LEN)

    # Machines stand in different halls: the site's offset spreads ambient readings within every month.
    outside = SEASON * torch.cos(2 * math.pi * (m - 6) / 12) + SITE_SPREAD * normal(1)  # warmest in July
    ambient = outside + 0.3 * torch.sin(2 * math.pi * (hour - 9) / 24) + noise * normal(SEQ_LEN)

    heating = per_class(HEATING) + HEATING_SPREAD * normal(1)
    bearing = (
        BEARING_AGEING * ageing(m)
        + SEASON_LEAK * outside
        + heating * hour / (SEQ_LEN - 1)
        + MACHINE_SPREAD * normal(1)
        + noise * normal(SEQ_LEN)
    )

    surge_on = uniform(1) < per_class(P_SURGE)
    surge_at = (uniform(1) * (SEQ_LEN - 3)).floor()
    surge = surge_on & (hour >= surge_at) & (hour < surge_at + 1 + (uniform(1) * 3).floor())
    current = load + 1.5 * surge + noise * normal(SEQ_LEN)

    return torch.stack([vibration, bearing, current, ambient], dim=2)


class Sensors:
    """Machine sensor windows with designed drift (``dataset=sensors``), for sequence models.

    Args:
        size: the share of every month's count, in (0, 1] (1.0 = 3,026 windows); each month keeps ≥10.
        seed: the generator's seed. The same seed gives bit-identical tensors.
        root: the data root; with ``cache``, the generated tensors are kept in ``<root>/sensors/``.
        cache: read and write that cache (off by default: generating takes milliseconds).
    """

    name = "sensors"
    model = "lstm"  # the model option that fits it (or gru)
    input_shape = (SEQ_LEN, len(CHANNELS))
    num_classes = len(CLASSES)
    change_points = CHANGE_POINTS

    def __init__(self, size: float = 1.0, seed: int = 0, root: str = "datasets", cache: bool = False):
        ConfigError.raise_all(generator_problems(size, seed, cache))
        self.size, self.seed, self.root, self.cache = float(size), seed, Path(root), cache

    @property
    def slice_labels(self) -> list[str]:
        return list(MONTHS)

    @property
    def cache_path(self) -> Path:
        return self.root / "sensors" / f"sensors-v{VERSION}-size{self.size:g}-seed{self.seed}.pt"

    def path_problems(self) -> list[Problem]:
        """Why ``root`` cannot hold the cache, found before any work: [] if cache is off or readable."""
        return cache_folder_problems(self.root, self.cache_path, self.cache)

    def load(self) -> Samples:
        """Generate (or read from the cache) every window, with its month as slice."""
        return load_generated(self, VERSION, self._generate)

    def _generate(self) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        counts = torch.tensor(scaled_counts(self.size))
        month = torch.repeat_interleave(torch.arange(NUM_MONTHS), counts)
        label = torch.randint(len(CLASSES), (len(month),), generator=g)
        # Fractional years: the month's start plus a uniform offset within it.
        offset = torch.rand(len(month), generator=g, dtype=torch.float64)
        time = FIRST_YEAR + (month.to(torch.float64) + offset) / 12
        return {"x": generate(month, label, g), "y": label, "time": time, "slice": month}
