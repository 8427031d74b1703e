"""SDK clients: each endpoint's calls are spread over a few clients, each built once and reused."""
import pytest

from promptbeat.llm import client as llm


def test_calls_to_one_endpoint_take_a_few_clients_in_turn():
    endpoint = llm.Endpoint("http://127.0.0.1:9/v1", "sk-test-spread")
    handed_out = [llm.client_for(endpoint) for _ in range(llm.CLIENTS_PER_ENDPOINT * 3)]
    distinct = {id(client) for client in handed_out}
    assert len(distinct) == llm.CLIENTS_PER_ENDPOINT
    # Every client is reused as often as the others: hundreds of calls in flight share each pool evenly.
    assert all(handed_out.count(client) == 3 for client in handed_out)


def test_endpoints_never_share_a_client():
    first = llm.Endpoint("http://127.0.0.1:9/v1", "sk-test-first")
    second = llm.Endpoint("http://127.0.0.1:9/v1", "sk-test-second")
    firsts = {id(llm.client_for(first)) for _ in range(llm.CLIENTS_PER_ENDPOINT)}
    seconds = {id(llm.client_for(second)) for _ in range(llm.CLIENTS_PER_ENDPOINT)}
    assert firsts.isdisjoint(seconds)
    assert {llm.client_for(second).api_key for _ in range(llm.CLIENTS_PER_ENDPOINT)} == {"sk-test-second"}


def test_closing_the_clients_closes_their_connections_and_later_calls_get_new_ones(fake_llm):
    endpoint = llm.Endpoint(fake_llm.url, "sk-test-close")
    used = [llm.client_for(endpoint) for _ in range(llm.CLIENTS_PER_ENDPOINT)]
    assert llm.complete(endpoint, model="fake-model", prompt="hi", timeout=10).output
    llm.close_clients()
    assert all(client.is_closed() for client in used)
    fresh = llm.client_for(endpoint)
    assert not fresh.is_closed() and all(fresh is not client for client in used)
    assert llm.complete(endpoint, model="fake-model", prompt="hi", timeout=10).output


def test_a_chat_completion_gives_its_answer_and_usage():
    body = {"id": "c1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    assert llm.completion_from(body) == llm.Completion("Hello", 5, 2, 7)


def test_servers_that_leave_parts_out_give_an_empty_answer_and_unknown_usage():
    # Ollama-style servers may omit usage; a tool call answers with content null; some send no choices.
    assert llm.completion_from({"choices": [{"message": {"role": "assistant", "content": None}}]}) \
        == llm.Completion("", None, None, None)
    assert llm.completion_from({"choices": []}) == llm.Completion("", None, None, None)


def test_an_answer_that_is_not_a_completion_object_is_a_clear_error():
    with pytest.raises(llm.LLMError) as caught:
        llm.completion_from(["not", "a", "completion"])
    assert caught.value.error_class == "APIResponseValidationError"
    assert "not a chat completion" in str(caught.value)


def test_every_secret_is_redacted_from_an_error_but_short_header_values_are_left():
    endpoint = llm.Endpoint("http://127.0.0.1:9/v1", "sk-abc-123", headers=(("X-Org", "org-secret"), ("X-Beta", "1")))
    assert llm.redact("key sk-abc-123, org org-secret, HTTP 401", *endpoint.secrets) == "key ***, org ***, HTTP 401"
    assert "org-secret" not in repr(endpoint) and "sk-abc-123" not in repr(endpoint)


@pytest.mark.parametrize("body", [{"data": 5}, [1, 2], "<html>", None, {"object": "list"}])
def test_an_answer_that_is_not_a_model_list_is_a_clear_error(body):
    with pytest.raises(llm.LLMError) as caught:
        llm.models_from(body)
    assert caught.value.error_class == "APIResponseValidationError"


def test_a_model_list_gives_its_ids_sorted_and_skips_entries_without_one():
    body = {"object": "list", "data": [{"id": "b"}, {"id": "a"}, {"object": "model"}, "junk", {"id": 3}]}
    assert llm.models_from(body) == ["a", "b"]
