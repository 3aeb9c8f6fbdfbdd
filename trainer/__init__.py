"""Thin command-line scripts over the `teran` library: import, parity check, evaluation."""
