"""One Redis client per process for workers' locks and limits (not the broker connection)."""
import redis

_clients = {}


def get_client(url):
    """A shared client for url, created on first use (after any worker fork)."""
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url, decode_responses=True)
    return client
