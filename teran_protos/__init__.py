"""The platform's gRPC contracts, generated from `protos/` (wire package `teran.v1`).

A package of its own so that clients import the contracts without the model library.
"""
