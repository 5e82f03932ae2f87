"""The OpenAI-compatible HTTP front door: the same engine as gRPC, over HTTP/JSON and server-sent events."""
