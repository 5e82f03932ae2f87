"""The engine: loads the model, schedules requests into batches and runs them. No gRPC in here.

Import from the submodules; this package imports nothing so the transport starts fast."""
