"""Grammar-constrained choice: a greedy row that keeps its own best token chooses what the mask would have."""
import json

import numpy as np

from server.engine.grammar import Grammars, StepGrammars
from server.engine.sampler import choose_tokens
from server.engine.tokenizer import Tokenizer
from server.engine.types import Constraint
from tests.server.engine.test_sampler import row

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "tags", "level"],
          "properties": {"name": {"type": "string"}, "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                         "level": {"enum": ["low", "high"]}}}


class Counted(StepGrammars):
    """Counts the rows that kept their own token; `always_mask`: never keeps one (the mask decides every row)."""

    def __init__(self, step: StepGrammars, always_mask: bool, kept: list):
        self.__dict__.update(step.__dict__)
        self._always_mask, self._kept = always_mask, kept

    def allows(self, row_: int, token: int) -> bool:
        ok = not self._always_mask and super().allows(row_, token)
        self._kept.append(ok)
        return ok


def test_greedy_rows_choose_what_their_masks_would_have_at_every_step(fp32_model_dir):
    tokenizer = Tokenizer.load(fp32_model_dir)
    eos = [tokenizer.eos_token_id]
    width = len(tokenizer)
    grammars = Grammars.for_tokenizer(tokenizer, width, eos)
    constraint = Constraint(json_schema=json.dumps(SCHEMA))
    rng = np.random.default_rng(7)
    closing = sorted({t for text in ('"', '"]', '"}', '}', ']', '",', ', "') for t in tokenizer.encode(text, False)})
    rows = [row(), row(), row(min_new_tokens=1000)]  # the last may not end before its grammar must
    matchers = [grammars.matcher(constraint) for _ in rows]
    kept: list[bool] = []
    for _ in range(200):
        live = [i for i, r in enumerate(rows) if not (r.output_ids and r.output_ids[-1] in eos)]
        if not live:
            break
        logits = rng.standard_normal((len(live), width)).astype(np.float32) * 4
        logits[:, closing] += 12 * (rng.random((len(live), 1)) < 0.3)  # now and then close what is open
        for j, i in enumerate(live):  # where bytes are forced, favour a token that spells only their first one
            if forced := matchers[i].compute_ff_bytes():
                logits[j, tokenizer.encode(forced[:1].decode(), False)[0]] += 20
        step = grammars.step({j: matchers[i] for j, i in enumerate(live)}, width)
        chosen, _ = choose_tokens(logits.copy(), [rows[i] for i in live], eos, Counted(step, False, kept))
        masked, _ = choose_tokens(logits.copy(), [rows[i] for i in live], eos, Counted(step, True, []))
        assert chosen == masked
        assert all(e is None for e in grammars.advance([(matchers[i], t) for i, t in zip(live, chosen)], eos))
        for i, t in zip(live, chosen):
            rows[i].output_ids.append(t)
    assert any(kept) and not all(kept)  # both ways were taken: tokens kept, and forced bytes or refusals masked
    for r in rows:  # each answer finished, as the schema's JSON
        assert r.output_ids[-1] in eos
        assert set(json.loads(tokenizer.decode(r.output_ids[:-1]))) == set(SCHEMA["required"])
