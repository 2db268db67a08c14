"""Benchmarks of AdaCLIP: :mod:`.compare` runs AdaCLIP and other anomalib models on a grid of data sets."""
