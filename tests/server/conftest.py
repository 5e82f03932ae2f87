"""Fixtures: the shared server the gRPC tests talk to."""
import pytest

from tests.server.harness import start_server


@pytest.fixture(scope="session")
def server(fp32_model_dir, tmp_path_factory):
    """The shared server: the default model with the stream profile, limits raised so a prompt can
    exceed the model's context without first exceeding the prompt limit; batch-invariant, as its tests compare
    answers across APIs, batches and the in-process model."""
    limits = {"max_prompt_tokens": 6000, "max_new_tokens_cap": 4096}
    s = start_server(fp32_model_dir, tmp_path_factory.mktemp("server"), config={"limits": limits, "batch_invariant": True})
    yield s
    s.stop()


@pytest.fixture(scope="session")
def stub(server):
    return server.stub
