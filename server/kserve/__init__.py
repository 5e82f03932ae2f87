"""The KServe v2 front door (inference.GRPCInferenceService over gRPC, /v2 over REST), as the OpenVINO Model
Server demo's clients speak it: KServe tensors <-> engine requests and events."""
