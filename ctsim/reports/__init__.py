"""The output side: what a run and a set of runs are turned into for people to read.

* :mod:`~ctsim.reports.summary`: a run's console summary and ``summary.md``;
* :mod:`~ctsim.reports.plots`: a run's plots (seaborn);
* :mod:`~ctsim.reports.analysis`: the drift diagnostics the portraits case study checks;
* :mod:`~ctsim.reports.oracle`: the hindsight-optimal trigger schedule and regret;
* :mod:`~ctsim.reports.compare`: the comparison of many runs (``ctsim compare``), with its
  plots and ``report.html`` (:mod:`~ctsim.reports.html`).

Nothing here trains: it reads a run's tables (:mod:`ctsim.registry`). The continual-learning metrics
(:mod:`ctsim.measure.metrics`) sit below, beside :mod:`ctsim.measure.quality`: a run computes them for
its own tables.
"""
