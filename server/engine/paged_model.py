"""The model rewritten for paged attention: every sequence of a step in one flat batch, KV in shared blocks.

The OVModelForCausalLM's `ov.Model` goes through OpenVINO's paged-attention transformation (no internal
state: the KV cache is a set of block tensors we own), plus a gather of the positions whose next token
is chosen before the vocabulary MatMul, as openvino-genai does, so a prefill computes one row of logits
per sequence instead of one per prompt token (every prompt row only for a request that wants its prompt's
logprobs).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from server.engine.params import SpeculationConfig

log = logging.getLogger(__name__)

SAMPLED = "sampled_tokens_indices"


class TransformationFailed(RuntimeError):
    """The model's architecture does not go through the paged-attention rewrite."""


@dataclass
class StepInputs:
    """One step, flattened: the tokens of every scheduled sequence back to back, no padding."""

    input_ids: np.ndarray  # [tokens] int64
    position_ids: np.ndarray  # [tokens] int64
    past_lens: np.ndarray  # [seqs] int32: tokens already in each sequence's cache
    subsequence_begins: np.ndarray  # [seqs + 1] int32: where each sequence's tokens start
    block_indices: np.ndarray  # [blocks] int32: every sequence's block table, back to back
    block_indices_begins: np.ndarray  # [seqs + 1] int32
    max_context_len: int
    sampled: np.ndarray  # [n] int64: token rows whose logits are wanted (a sequence's last token, or every one)


# Row-wise steps between the vocabulary MatMul and the logits: a bias (Add), Granite's logits scaling (Divide),
# Gemma 2's soft-capping (Divide, Tanh, Multiply), each with at most one input that is not a constant.
_AFTER_LM_HEAD = {"Add", "Subtract", "Multiply", "Divide", "Tanh", "Convert"}


def _constant(node) -> bool:
    """A Constant, or one converted (an FP16 model's constants are f16 Constants behind a Convert)."""
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant"


def _lm_head(ov_model):
    """The vocabulary MatMul feeding the logits (Result <- MatMul, optionally through row-wise steps)."""
    node = ov_model.output("logits").get_node().input_value(0).get_node()
    while node.get_type_name() in _AFTER_LM_HEAD:
        inputs = [node.input_value(i).get_node() for i in range(node.get_input_size())]
        computed = [n for n in inputs if not _constant(n)]
        if len(computed) != 1:
            break
        node = computed[0]
    if node.get_type_name() != "MatMul" or node.input(0).get_partial_shape().rank.get_length() != 3:
        raise TransformationFailed(f"no vocabulary MatMul before the logits (found {node.get_type_name()})")
    return node


def alibi_slopes(n_heads: int, alibi_bias_max: float = 8.0) -> np.ndarray:
    """MPT's ALiBi slopes, by its own rule: for a head count that is not a power of 2, the odd then the even
    heads of the next power of 2."""
    p2 = 2 ** math.ceil(math.log2(n_heads))
    slopes = 1.0 / np.power(2.0, np.arange(1, p2 + 1, dtype=np.float64) * (alibi_bias_max / p2))
    if p2 != n_heads:
        slopes = np.concatenate([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes.astype(np.float32)


def _set_alibi(ov_model, config) -> None:
    """OpenVINO's rewrite leaves PagedAttention's alibi_slopes input (11) empty for optimum-intel's MPT export, so
    attention would ignore positions: give it MPT's slopes."""
    import openvino as ov

    if getattr(config, "model_type", None) != "mpt":
        return
    attn = getattr(config, "attn_config", None) or {}
    bias_max = attn.get("alibi_bias_max", 8) if isinstance(attn, dict) else getattr(attn, "alibi_bias_max", 8)
    slopes = ov.op.Constant(alibi_slopes(config.n_heads, bias_max))
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() == "PagedAttentionExtension" and op.input(11).get_partial_shape().is_static \
                and op.input(11).get_shape() in ([0], [config.n_heads]):
            op.input(11).replace_source_output(slopes.output(0))


def transform(ov_model, config=None) -> None:
    """Rewrite `ov_model` in place for paged attention with a gather before the vocabulary MatMul."""
    import openvino as ov

    from server.engine.libraries import paged_attention_transformation

    try:
        paged_attention_transformation(ov_model)
    except Exception as exc:
        raise TransformationFailed(f"paged-attention transformation failed: {exc}") from exc
    names = {n for i in ov_model.inputs for n in i.get_names()}
    if not {"past_lens", "block_indices", "key_cache.0"} <= names:
        raise TransformationFailed("the transformation left no paged-attention inputs (unsupported architecture)")
    _set_alibi(ov_model, config)
    matmul = _lm_head(ov_model)
    # After the transformation the hidden states are [tokens, 1, hidden]: gather token rows on axis 0.
    indices = ov.op.Parameter(ov.Type.i64, ov.PartialShape([-1]))
    indices.set_friendly_name(SAMPLED)
    indices.output(0).get_tensor().set_names({SAMPLED})
    gather = ov.opset8.gather(matmul.input_value(0), indices, ov.op.Constant(ov.Type.i64, ov.Shape([1]), [0]))
    matmul.input(0).replace_source_output(gather.output(0))
    ov_model.add_parameters([indices])
    ov_model.validate_nodes_and_infer_types()


class PagedModel:
    """The compiled paged model (one or more copies), an infer request on each, and the KV cache blocks they all read
    and write.

    OpenVINO's CPU plugin prepares a graph's kernels again whenever it runs a token count other than its last
    (measured with INT8 weights on an AMD EPYC: a 1-token step 10.7 ms after another, 17 ms after a 5-token one;
    the 5-token step 12.5 ms after another, 17-23 ms after a 1-token one), and each compiled model keeps its own.
    So a step goes to the copy that last ran its token count, or else to the one used least recently: one-token
    decode steps and speculation's longer steps each keep a copy of their own. A copy also keeps buffers for the
    largest step it ran (a prompt's logprobs: a row of the vocabulary per token), so a step of more than `small`
    tokens (a prompt's chunk, a large batch) always runs on the first copy, and only that one grows them."""

    def __init__(self, compiled, small: int = SpeculationConfig.max_step_tokens, pad_single: bool = False):
        compiled = tuple(compiled) if isinstance(compiled, (tuple, list)) else (compiled,)
        self.compiled = compiled[0]
        self.small = small
        # A step of one token runs on other kernels than a longer one (its numbers differ by rounding): in
        # batch-invariant mode a lone decode step gets a padding token (see `padded_tokens`), so a sequence alone
        # computes as it does beside others.
        self.pad_single = pad_single
        self._requests = [[c.create_infer_request(), 0] for c in compiled]  # most recent first: [request, tokens]
        self._first = self._requests[0][0]
        self._caches = [i for i in self.compiled.inputs
                        if i.get_any_name().startswith(("key_cache.", "value_cache."))]
        # Compiled for a device, each cache input is [blocks (dynamic), heads, rows, columns]: at f16 or bf16,
        # rows are the block's tokens and columns the head size; a quantized cache (u8, u4) also stores its
        # scales and zero points in the block, as extra rows of the key cache (per channel) and extra columns
        # of the value cache (per token). So the block size is the smaller row count (a GPU key cache is
        # [blocks, heads, head_size, tokens]: the smaller one again).
        self._block_dims = [[d.get_length() for d in list(i.get_partial_shape())[1:]] for i in self._caches]
        self.block_size = int(min(dims[1] for dims in self._block_dims))
        self.bytes_per_block = sum(int(np.prod(d)) * i.get_element_type().bitwidth // 8
                                   for d, i in zip(self._block_dims, self._caches))
        self.kv_precision = self._caches[0].get_element_type().get_type_name()
        self.num_blocks = 0

    @property
    def copies(self) -> int:
        return len(self._requests)

    def allocate(self, num_blocks: int) -> None:
        """The KV cache: one tensor per layer for keys and one for values, allocated once and written through
        (as llama.cpp clears its cache and vLLM allocates zeros): the server's memory is all taken at its start,
        not page by page as the prefix cache fills, so its RSS stays flat under load and a cache too large for
        the machine shows at the start, not an hour later."""
        import openvino as ov

        self._tensors = []  # kept here as well as in the requests
        physical = num_blocks + 1  # the padding tokens' block (`padded_tokens`), never handed out
        for port, dims in zip(self._caches, self._block_dims):
            tensor = ov.Tensor(port.get_element_type(), ov.Shape([physical, *dims]))
            for request, _ in self._requests:  # the same memory for every copy
                request.set_tensor(port.get_any_name(), tensor)
            self._tensors.append(tensor)
            np.asarray(tensor.data).view(np.uint8).fill(0)
        self.num_blocks = num_blocks

    def warm_up(self) -> None:
        """A 2-token step then a 1-token step on every copy, in block 0 (free until the first request). The CPU
        plugin lays out a compiled model's compressed weights for its kernels at its first inference, reading the
        whole mapped weights file, which then stays resident though only part of it is read again (what it reads
        in place): done here, before serving, the file's pages can be given back (pages.py) and the first request
        waits for no layout."""
        for tokens in (2, 1):
            step = StepInputs(input_ids=np.zeros(tokens, np.int64), position_ids=np.arange(tokens, dtype=np.int64),
                              past_lens=np.zeros(1, np.int32), subsequence_begins=np.array([0, tokens], np.int32),
                              block_indices=np.zeros(1, np.int32), block_indices_begins=np.array([0, 1], np.int32),
                              max_context_len=tokens, sampled=np.array([tokens - 1], np.int64))
            for request, _ in self._requests:
                request.infer(_feed(step), share_inputs=True)

    def forward(self, step: StepInputs) -> np.ndarray:
        """Logits of the sampled token rows, [len(step.sampled), vocab] float32 (a copy)."""
        tokens = padded_tokens(len(step.input_ids), self.block_size, self.pad_single)
        if tokens > len(step.input_ids):
            step = self._padded(step, tokens - len(step.input_ids))
        request = self._request_for(len(step.input_ids))
        request.infer(_feed(step), share_inputs=True)
        logits = request.get_tensor("logits").data
        return np.array(logits.reshape(len(step.sampled), logits.shape[-1]), dtype=np.float32)

    def _padded(self, step: StepInputs, pad: int) -> StepInputs:
        """The step with one more sequence: `pad` tokens (id 0, positions from 0) in the padding block, past the
        cache's last block; its rows are not sampled."""
        blocks, tokens = len(step.block_indices), len(step.input_ids)
        return StepInputs(
            input_ids=np.append(step.input_ids, np.zeros(pad, np.int64)),
            position_ids=np.append(step.position_ids, np.arange(pad, dtype=np.int64)),
            past_lens=np.append(step.past_lens, np.int32(0)),
            subsequence_begins=np.append(step.subsequence_begins, np.int32(tokens + pad)),
            block_indices=np.append(step.block_indices, np.int32(self.num_blocks)),
            block_indices_begins=np.append(step.block_indices_begins, np.int32(blocks + 1)),
            max_context_len=max(step.max_context_len, pad),
            sampled=step.sampled,
        )

    def _request_for(self, tokens: int):
        """The infer request of the first copy for a long step, else of the copy that last ran `tokens` tokens, else
        of the one used least recently."""
        if tokens > self.small:
            i = next(i for i, (request, _) in enumerate(self._requests) if request is self._first)
        else:
            i = next((i for i, (_, last) in enumerate(self._requests) if last == tokens), len(self._requests) - 1)
        entry = self._requests.pop(i)
        entry[1] = tokens
        self._requests.insert(0, entry)
        return entry[0]


# Steps of up to this many tokens (a decode step of max_batch sequences, speculation's) run at their own size.
EXACT_TOKENS = 32


def padded_tokens(tokens: int, block_size: int, pad_single: bool = False) -> int:
    """The token count a step of `tokens` runs at. The CPU plugin compiles kernels for each token count it meets
    and keeps them (about 2.4 MB of code and buffers per count on the default model, never given back), so a
    server meeting every count up to max_step_tokens would grow by a gigabyte. Above EXACT_TOKENS a step is
    padded to a multiple of an eighth of its power of two, at least 8 (8 counts per doubling above 64: at most
    12.5% more tokens there, 21% at 33), no coarser than a KV block, so its padding fits the one padding block. `pad_single`: a lone token gets a
    second (batch-invariant mode)."""
    if tokens <= EXACT_TOKENS:
        return 2 if pad_single and tokens == 1 else tokens
    multiple = min(block_size, max(8, 1 << (tokens.bit_length() - 4)))
    return -(-tokens // multiple) * multiple


def _feed(step: StepInputs) -> dict:
    """A step as the compiled model's inputs."""
    return {"input_ids": step.input_ids, "position_ids": step.position_ids, "past_lens": step.past_lens,
            "subsequence_begins": step.subsequence_begins, "block_indices": step.block_indices,
            "block_indices_begins": step.block_indices_begins,
            "max_context_len": np.array(step.max_context_len, dtype=np.int32), SAMPLED: step.sampled}


def compile_paged(ov_model, device: str, ov_config: dict, config=None, copies: int = 1) -> tuple:
    """The rewritten model compiled `copies` times (PagedModel runs each step on one of them); the copies share the
    model's weights (about 25 MB each for the default model)."""
    import openvino as ov

    transform(ov_model, config)
    core = ov.Core()
    try:
        first = core.compile_model(ov_model, device, ov_config)
    except RuntimeError as exc:
        if not ov_config.get("CACHE_DIR") or "filesystem error" not in str(exc):
            raise
        # Two processes compiling the same model into one cache directory at once (replicas on a shared
        # volume) race on its blob, and the loser's compile fails. The cache only saves time: go without it.
        log.warning("the model cache %s failed (%s); compiling without it", ov_config["CACHE_DIR"],
                    str(exc).strip().splitlines()[-1])
        ov_config = {k: v for k, v in ov_config.items() if k != "CACHE_DIR"}
        first = core.compile_model(ov_model, device, ov_config)
    return (first, *(core.compile_model(ov_model, device, ov_config) for _ in range(copies - 1)))
