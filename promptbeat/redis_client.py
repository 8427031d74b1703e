"""One Redis client per process for workers' locks and limits (not the broker connection)."""
import redis

# Runs hold a connection only for a command or two, so a few dozen serve hundreds of threads.
MAX_CONNECTIONS = 64
# A thread waits this long for a free connection before the call fails.
WAIT_SECONDS = 30
_clients = {}


def get_client(url):
    """A shared client for url, created on first use (after any worker fork).

    Its pool blocks when every connection is in use: redis-py's default pool raises "Too many
    connections" past 100, which a worker running -P threads -c 300 would reach.
    """
    client = _clients.get(url)
    if client is None:
        pool = redis.BlockingConnectionPool.from_url(
            url, decode_responses=True, max_connections=MAX_CONNECTIONS, timeout=WAIT_SECONDS)
        client = _clients[url] = redis.Redis(connection_pool=pool)
    return client
