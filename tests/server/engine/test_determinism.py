"""Same prompt, same numbers (logprobs equal to the last bit): however much of a prompt came from the prefix cache and however it was chunked, its
greedy answer is the one it gets computed fresh in one piece; in batch-invariant mode also whatever runs beside it."""
import pytest

from server.engine.scheduler import RECOMPUTED
from server.engine.engine import Engine
from server.engine.model import LoadedModel
from server.engine.params import KVCacheConfig, Limits, SchedulerConfig
from server.engine.types import GenerationRequest, Message, GivenParams, TextDelta, collect
from tests.server.harness import wait_until

OV_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
SYSTEM = "You are a librarian. " + " ".join(
    f"Shelf {i} holds books about {topic}." for i, topic in enumerate(
        ("ships", "trains", "birds", "maps", "stars", "rivers", "castles", "gardens", "clocks", "bridges")))
PROMPTS = ("What is the theory of relativity?", "Who is Albert Einstein?", "Write a short poem about the sea.",
           "How do I make a cup of tea?", "What is the capital of Japan?", "Why is the sky blue?",
           "List three uses of copper.", "Explain photosynthesis in one paragraph.")
LONG = "Summarise this text. " + " ".join(
    f"Sentence {i} says that the river flows past the old mill towards the sea." for i in range(14))


def ask(prompt: str, n: int, system: str | None = None) -> GenerationRequest:
    return GenerationRequest(prompts=(prompt,), system_prompt=system, logprobs=0,
                             params=GivenParams(max_new_tokens=n, min_new_tokens=n))


def numbers(c) -> tuple:
    """An answer's tokens with their logprobs: equal only if every step computed the same numbers."""
    return tuple((lp.token_id, lp.logprob) for lp in c.logprobs)


def sized(model, text: str, system: str | None, modulus: int, remainder: int) -> str:
    """`text` grown word by word until its rendered prompt's token count is `remainder` modulo `modulus`."""
    for _ in range(4 * modulus):
        if len(model.encode(model.render(text, system, False), False)) % modulus == remainder:
            return text
        text += " again"
    raise AssertionError(f"no length {remainder} modulo {modulus}")


def answer(engine: Engine, request: GenerationRequest):
    (c,) = collect(engine.stream(request, timeout=300))
    return c


def idle(engine: Engine) -> None:
    assert wait_until(lambda: engine.counts() == (0, 0))
    engine.core.check()


@pytest.fixture(scope="module")
def shipped(int8_model_dir):
    """The shipped numerics (f32 inference, dynamic quantization on), not batch-invariant."""
    model = LoadedModel.load(int8_model_dir, "CPU", OV_CONFIG)
    assert model.info.numerics.dynamic_quantization and not getattr(model.info, "batch_invariant", False)
    return model


def test_a_prompt_chunked_anyhow_cached_or_not_gives_its_one_piece_answer(shipped):
    """Chunks of 16, 64 and 256 tokens (of 16: a last chunk of one token, in the middle of a block) with a cold
    cache and a warm one (where all but the last tokens are found, the short answer's KV having ended in the prompt's
    last block): the fresh one-piece answer every time, on the shipped numerics."""
    prompt, want = sized(shipped, LONG, None, 32, 17), None
    for chunk in (512, 16, 64, 256):
        engine = Engine(shipped, limits=Limits(max_batch=4), scheduler=SchedulerConfig(max_step_tokens=chunk),
                        kv_cache=KVCacheConfig(blocks=64))
        try:
            cold, warm = answer(engine, ask(prompt, 8)), answer(engine, ask(prompt, 8))
            assert (cold.usage.cached_tokens, warm.usage.cached_tokens) == (0, cold.usage.prompt_tokens - RECOMPUTED)
            if want is None:
                assert cold.usage.prompt_tokens > 256
                want = numbers(cold)
            assert (chunk, numbers(cold), numbers(warm)) == (chunk, want, want)
            idle(engine)
        finally:
            engine.close()


def test_the_same_request_in_a_row_gives_one_answer_whatever_the_cache_held(shipped):
    """Sent again and again, a request finds its system prompt, then all of itself but the last tokens (its short
    answer's KV ends in its prompt's last block), in the cache: one answer."""
    engine = Engine(shipped, limits=Limits(max_batch=4), kv_cache=KVCacheConfig(blocks=64))
    try:
        for prompt in PROMPTS[:3]:
            got = [answer(engine, ask(sized(shipped, prompt, SYSTEM, 32, 8), 12, SYSTEM)) for _ in range(4)]
            assert len({numbers(c) for c in got}) == 1, [c.text for c in got]
            length = got[0].usage.prompt_tokens
            cached = [c.usage.cached_tokens for c in got]
            assert cached[0] < length - RECOMPUTED and cached[1:] == [length - RECOMPUTED] * 3
        idle(engine)
    finally:
        engine.close()


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_batch_invariant_answers_equal_solo_ones_with_a_cached_system_prompt(precision, request):
    """8 prompts x 64 tokens sharing a system prompt of several blocks: each alone (the first fills the cache, the
    rest read it), then all together = the same texts, token for token."""
    model_dir = request.getfixturevalue(f"{precision}_model_dir")
    model = LoadedModel.load(model_dir, "CPU", OV_CONFIG, batch_invariant=True)
    engine = Engine(model, limits=Limits(max_batch=8), kv_cache=KVCacheConfig(blocks=96))
    try:
        solo = [answer(engine, ask(p, 64, SYSTEM)) for p in PROMPTS]
        assert solo[0].usage.cached_tokens == 0 and all(c.usage.cached_tokens >= 64 for c in solo[1:])
        together = [engine.submit(ask(p, 64, SYSTEM)) for p in PROMPTS]
        assert ["".join(e.text for e in h.events(300) if isinstance(e, TextDelta)) for h in together] \
            == [c.text for c in solo]
        idle(engine)
    finally:
        engine.close()


def test_batch_invariant_turns_compute_earlier_answers_as_a_fresh_prompt(int8_model_dir):
    """In batch-invariant mode only prompts' KV is reused: a second turn reads its first turn's prompt from the
    cache, not the answer (computed a token at a time), and answers as on an engine that never saw turn 1."""
    model = LoadedModel.load(int8_model_dir, "CPU", OV_CONFIG, batch_invariant=True)
    warm, cold = (Engine(model, kv_cache=KVCacheConfig(blocks=64)),
                  Engine(model, kv_cache=KVCacheConfig(blocks=64, prefix_caching=False)))
    try:
        first = answer(warm, ask(PROMPTS[0], 40, SYSTEM))
        conversation = (Message("user", PROMPTS[0]), Message("assistant", first.text), Message("user", "Say more."))
        turn = GenerationRequest(conversations=(conversation,), system_prompt=SYSTEM,
                                 params=GivenParams(max_new_tokens=48, min_new_tokens=48))
        got, want = answer(warm, turn), answer(cold, turn)
        assert 0 < got.usage.cached_tokens <= first.usage.prompt_tokens
        assert got.text == want.text
        idle(warm)
    finally:
        warm.close()
        cold.close()
