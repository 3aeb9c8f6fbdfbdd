"""Thin command-line scripts over the `teran` library: training, evaluation, export,
checkpoint import and the reference parity check."""
