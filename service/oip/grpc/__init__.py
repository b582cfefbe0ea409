"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` on GRADUAL_GRPC_PORT.

`generated/` holds the protocol's messages, generated from `grpc_predict_v2.proto` by
scripts/generate-grpc (never edited by hand); `tensors` converts them, `service` answers each
RPC through `service.oip.protocol` as /v2 does, and `server` runs it on the app's event loop.
"""
