"""The one error table: every error a client can get has one row, and each front door says it from that row."""
from __future__ import annotations

import grpc

from server.engine import errors as engine_errors
from server.engine.errors import EngineError, GenerationFailed, NotReady, QueueFull, ValidationError
from server.errors import INTERNAL, STATUS, ModelNotFound, Unauthenticated, status_of
from server.grpc.interceptor import status_for
from server.http import errors as http_errors
from server.kserve.rest import _error as kserve_rest_error

SAMPLES = [ValidationError("top_p", "must be in (0, 1]"), QueueFull("the queue is full"), NotReady("loading"),
           GenerationFailed("boom"), ModelNotFound("model 'x' is not served here"), Unauthenticated("no key")]


def test_every_engine_error_has_a_row():
    kinds = {v for v in vars(engine_errors).values() if isinstance(v, type) and issubclass(v, EngineError)}
    assert kinds - {EngineError} <= STATUS.keys()
    assert {type(e) for e in SAMPLES} == STATUS.keys()


def test_the_front_doors_say_each_error_as_its_row_says():
    for error in SAMPLES:
        row = status_of(error)
        assert status_for(error) == row.grpc
        http = http_errors.from_engine(error)
        assert (http.status, http.type, http.log_code) == (row.http, row.openai_type, row.grpc.name)
        assert kserve_rest_error(error).status_code == row.http


def test_the_rows_agree_with_the_contract():
    assert status_of(ValidationError("x", "y")).grpc == grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(QueueFull()).http == 429 and status_of(NotReady()).http == 503
    assert status_of(ModelNotFound()).grpc == grpc.StatusCode.NOT_FOUND and status_of(ModelNotFound()).http == 404
    assert status_of(RuntimeError("anything else")) is INTERNAL


def test_a_validation_error_is_a_path_and_a_message():
    error = ValidationError("conversations[0].messages[1].role", "unknown role")
    assert error.path == ("conversations", 0, "messages", 1, "role") and error.message == "unknown role"
    assert str(error) == "conversations[0].messages[1].role: unknown role"
    assert ValidationError(("prompt_ids", 1, 2), "x").field == "prompt_ids[1][2]"


def test_each_front_door_names_the_path_from_its_own_table():
    from server.grpc.convert import error_message
    from server.kserve.protocol import kserve_message

    error = ValidationError("logprobs", "must be in [0, 20]")
    assert error_message(error) == "top_logprobs: must be in [0, 20]"  # GenerateRequest's name
    assert http_errors.from_engine(error).param == "logprobs"  # no body parsed: the engine's name stays
    stop = ValidationError("stop[1]", "must not be empty")
    assert kserve_message(stop) == "parameters.stop[1]: must not be empty"
    assert error_message(stop) == str(stop)
