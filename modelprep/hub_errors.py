"""Turn Hugging Face Hub failures into one sentence the user can act on."""
from __future__ import annotations

from modelprep.errors import ModelPrepError

_OFFLINE = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectError", "ConnectionError", "ConnectTimeout",
            "ReadTimeout", "TimeoutException", "NameResolutionError", "MaxRetryError"}


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def explain(exc: BaseException, model_id: str) -> ModelPrepError | None:
    """The user-facing error for a hub failure, or None if `exc` is not one."""
    names = {base.__name__ for e in _chain(exc) for base in type(e).__mro__}
    text = " ".join(str(e) for e in _chain(exc))
    url = f"https://huggingface.co/{model_id}"
    if "GatedRepoError" in names:
        return ModelPrepError(
            f"{model_id} is gated: accept its license at {url} and set HF_TOKEN (or run `hf auth login`)"
        )
    if "RepositoryNotFoundError" in names:
        return ModelPrepError(f"{model_id} was not found on the Hugging Face Hub (if it is private, set HF_TOKEN)")
    if names & _OFFLINE or "couldn't connect" in text or "outgoing traffic has been disabled" in text:
        return ModelPrepError(
            f"cannot download {model_id}: the Hugging Face Hub is not reachable (offline or HF_HUB_OFFLINE=1); "
            "only smollm2-135m-instruct works offline"
        )
    return None
