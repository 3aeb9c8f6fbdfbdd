"""Generated gRPC contracts of package teran.v1 (from protos/ by `make protos`)."""
