"""Benchmarks of AdaCLIP.

The comparison (``anomalib-adaclip benchmark --config``; public names in :mod:`.compare`) is a generator, a job and a
pipeline in the manner of anomalib's benchmark:

- :mod:`.config` and :mod:`.specs`: the YAML schema, checked before anything runs; :mod:`.metrics`: what is measured;
- :mod:`.store`: the resumable record of every run; :mod:`.runner`: what is left to run, one run, the whole grid;
- :mod:`.report`: tables (CSV, Markdown) and plots; :mod:`.cli`: the command.

:mod:`.speed` (``python -m anomalib_adaclip.benchmark.speed``) measures images per second, seconds per image, peak
memory and where the time goes, on random weights.
"""
