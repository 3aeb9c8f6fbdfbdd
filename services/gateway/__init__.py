"""HTTP/JSON gateway and search page over the gRPC API (`--target gateway`, or in `all`)."""
