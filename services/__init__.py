"""The platform's gRPC services: ImageEncoder, TextEncoder and the public Ranker.

One code base, run as one process (`--target all`) or as separate deployments
(`--target image_encoder|text_encoder|ranker`).
"""
