"""client/request.py: the flags come from the contract, and only what the user gave is sent."""
from __future__ import annotations

from client.request import build_request, client_parser, optional_fields
from proto import llm_pb2


def test_every_optional_request_field_has_a_flag():
    args = client_parser("t").parse_args(["-p", "x"])
    names = {f.name for f in optional_fields()}
    assert {"max_new_tokens", "temperature", "top_k", "do_sample", "seed", "system_prompt"} <= names
    assert all(hasattr(args, name) for name in names)


def test_unset_flags_stay_unset_so_the_servable_defaults_apply():
    request = build_request(client_parser("t").parse_args(["-p", "a", "-p", "b", "--top-k", "5", "--no-do-sample",
                                                           "--stop", "###"]))
    assert list(request.prompts) == ["a", "b"] and list(request.stop) == ["###"]
    assert request.top_k == 5 and request.HasField("do_sample") and request.do_sample is False
    for name in ("max_new_tokens", "temperature", "seed", "system_prompt"):
        assert not request.HasField(name), name
    assert isinstance(request, llm_pb2.GenerateRequest)


def test_json_schema_names_a_file_whose_text_is_sent_and_kserve_refuses_it(tmp_path):
    import pytest

    from client.connection import ClientError
    from client.request import build_kserve_request

    (tmp_path / "s.json").write_text('{"type": "object"}')
    args = client_parser("t").parse_args(["-p", "a", "--json-schema", str(tmp_path / "s.json"), "--api", "kserve"])
    assert build_request(args).json_schema == '{"type": "object"}' and not build_request(args).HasField("regex")
    with pytest.raises(ClientError, match="^--json-schema: KServe"):
        build_kserve_request(args)
