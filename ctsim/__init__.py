"""ctsim: a continual-training simulator and benchmark suite."""

__version__ = "0.1.0"
