"""Benchmarks of AdaCLIP, each a runnable module: ``python -m anomalib_adaclip.benchmark.<name> --help``.

- :mod:`.compare`: AdaCLIP and other anomalib models on a grid of data sets (``anomalib-adaclip benchmark``).
- :mod:`.speed`: images per second, seconds per image, peak memory and where the time goes, on random weights.
"""
