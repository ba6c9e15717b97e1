"""Statistics, time-to-target, performance profiles and scaling-law fits: pure functions on
numpy arrays and pandas frames (no files, no printing). ``bench.report`` and ``bench fit`` wire
them to the result store."""
