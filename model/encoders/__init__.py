"""Text to unit vectors: the `Encoder` protocol, sentence-transformers, the int8 ONNX export, the cache."""
