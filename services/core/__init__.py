"""The services' shared domain: encoding images and sentences, and writing them into a model
version's index. The service folders (image_encoder, text_encoder, ranker, upgrade) map their
protos onto this and never import one another."""
