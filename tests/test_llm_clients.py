"""SDK clients: each endpoint's calls are spread over a few clients, each built once and reused."""
from promptbeat import llm


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
