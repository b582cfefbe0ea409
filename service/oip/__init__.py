"""The Open Inference Protocol (v2): schemas and the operations HTTP and gRPC share."""
