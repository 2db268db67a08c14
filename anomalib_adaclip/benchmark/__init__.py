"""Benchmarks of AdaCLIP, each a runnable module: ``python -m anomalib_adaclip.benchmark.<name> --help``.

- :mod:`.speed`: images per second, seconds per image, peak memory and where the time goes, on random weights.
"""
