"""Runs one batch of requests through `generate` on one infer request."""
from __future__ import annotations

import logging

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

from server.engine.batch import pad_left
from server.engine.streamer import BatchTextStreamer
from server.engine.tokens import RowLogitsProcessor, RowStoppingCriteria

log = logging.getLogger(__name__)


def run_batch(ov_model, tokenizer, rows, eos_token_ids: tuple[int, ...], pad_token_id: int) -> None:
    """Generate for every row; events reach each row's request as they happen.

    Greedy selection is what transformers runs; sampling, penalties and minimum lengths are applied per
    row by RowLogitsProcessor, so one batch can hold requests with different parameters.
    """
    input_ids, attention_mask = pad_left(rows, pad_token_id)
    config = GenerationConfig(
        max_new_tokens=max(r.params.max_new_tokens for r in rows),
        do_sample=False,
        num_beams=1,
        eos_token_id=list(eos_token_ids),
        pad_token_id=pad_token_id,
    )
    try:
        with torch.inference_mode():
            ov_model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=config,
                logits_processor=LogitsProcessorList([RowLogitsProcessor(rows, eos_token_ids)]),
                stopping_criteria=StoppingCriteriaList([RowStoppingCriteria(rows, eos_token_ids)]),
                streamer=BatchTextStreamer(rows, tokenizer, eos_token_ids),
            )
    except Exception as exc:  # the model itself failed: every request of this batch fails, the server goes on
        log.exception("batch of %d rows failed", len(rows))
        for handle in {id(r.handle): r.handle for r in rows}.values():
            handle.fail(exc)
