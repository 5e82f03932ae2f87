"""The gRPC front door (llm.LLMService): wire messages <-> engine requests and events, errors -> statuses."""
