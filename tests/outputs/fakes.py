"""Scripting the fake model server's answers over HTTP, and reading back what it was sent."""
import json
import urllib.request


def control(fake_llm, path, payload=None):
    """POST (or GET without payload) one of the fake server's /_fake control endpoints; returns its JSON."""
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(f"http://{fake_llm.host}:{fake_llm.port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def script_answers(fake_llm, *contents):
    """The next chat requests are answered with these texts, in order (after forgetting earlier requests)."""
    control(fake_llm, "/_fake/reset", {})
    control(fake_llm, "/_fake/script", {"responses": [{"content": content} for content in contents]})


def sent(fake_llm):
    """The chat requests the server received since the last script, oldest first."""
    return control(fake_llm, "/_fake/requests")["requests"]
