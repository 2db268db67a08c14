"""Benchmarks of AdaCLIP.

The comparison (``anomalib-adaclip benchmark --config``; public names in :mod:`.compare`) is an anomalib pipeline: a
job generator and a job per run (:mod:`anomalib.pipelines.components`), run by anomalib's runners:

- :mod:`.config` and :mod:`.specs`: the YAML schema, checked before anything runs; :mod:`.metrics`: what is measured;
- :mod:`.store`: the resumable record of every run; :mod:`.runner`: the jobs of the grid (or a shard),
  one run, the report;
- :mod:`.report`: tables (CSV, Markdown) and plots; :mod:`.cli`: the command.

:mod:`.speed` (``python -m anomalib_adaclip.benchmark.speed``) measures images per second, seconds per image, peak
memory and where the time goes, on random weights.
"""
