"""kombu's Redis transport: one redis-py client per channel, a pool that waits, a consumer that notices acks."""
import redis
from kombu import transport as kombu_transports
from kombu.transport import redis as kombu_redis

from promptbeat import versions
from promptbeat.redis_client import WAIT_SECONDS

# The subclasses below override kombu's private methods (_create_client, _get_pool, the poller's get() and
# its _channels) and build redis-py's BlockingConnectionPool from a pool's attributes: the versions they
# were written and measured against (tests/worker/test_library_internals.py fails when the installed ones leave them).
WRITTEN_FOR = (versions.WrittenFor("kombu", ">=5.7,<5.8"), versions.WrittenFor("redis", ">=8,<9"))


class Channel(kombu_redis.Channel):
    """Sends the commands kombu issues outside its poll loop through one shared client.

    Stock kombu builds a new client for each of them (each ack, each record of an unacked message,
    each batch of task events), and redis-py 8 fills a table of response callbacks for every client
    it builds: at hundreds of runs a second, building clients was a large share of a worker's CPU
    (docs/performance.md has the profile). A client over a connection pool is thread-safe: each
    command takes a connection from the pool.
    """

    _shared_client = None

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        # kombu drops its pool when the connection fails; a client on the dropped pool is not reused.
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()
        return client

    def _get_pool(self, asynchronous=False):
        pool = super()._get_pool(asynchronous=asynchronous)
        if asynchronous:
            return pool
        # Acks and event batches sent from hundreds of greenlets at once wait for one of the pool's
        # connections, instead of failing with "Too many connections", which drops the consumer.
        return redis.BlockingConnectionPool(
            connection_class=pool.connection_class, max_connections=pool.max_connections,
            timeout=WAIT_SECONDS, **pool.connection_kwargs)


# While every prefetched message is still running, a consumer without an event loop looks for freed
# credit this often (a small poll or sleep), instead of once per drain timeout.
CREDIT_CHECK_SECONDS = 0.01


class MultiChannelPoller(kombu_redis.MultiChannelPoller):
    """Notices an ack within CREDIT_CHECK_SECONDS when the consumer's prefetch limit is reached.

    Consumers without an event loop (Celery's gevent, eventlet and solo pools) wait for the next
    message with a timeout of seconds. With every prefetched message unacknowledged, kombu spends
    that wait sleeping or polling a socket no ack will wake, so under -P gevent each wave of runs was
    followed by a wait with nothing in flight (docs/performance.md). The event loop of
    the threads and prefork pools never calls get() and is unaffected.
    """

    def get(self, callback, timeout=None):
        if self._out_of_credit():
            timeout = CREDIT_CHECK_SECONDS if timeout is None else min(timeout, CREDIT_CHECK_SECONDS)
        return super().get(callback, timeout)

    def _out_of_credit(self):
        # Only consumers of queues have credit; a connection that only listens (events) waits as before.
        consuming = [channel for channel in self._channels if channel.active_queues]
        return bool(consuming) and not any(channel.qos.can_consume() for channel in consuming)


class Transport(kombu_redis.Transport):
    """The Redis transport, with the channel and the poller above."""

    Channel = Channel

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cycle = MultiChannelPoller()


def install():
    """Serve redis:// broker URLs with this transport in this process; returns whether it was installed.

    Not installed (kombu's own transport serves them, and a warning says so) when the installed kombu or
    redis-py is outside WRITTEN_FOR. Registered under kombu's own "redis" alias rather than named in
    broker_transport, so the URL keeps its scheme wherever it is shown or parsed again (Flower's broker
    view reads it). The worker role calls it before its Celery app is built (worker/celery.py); web and
    beat publish through kombu's own transport.
    """
    if not versions.supported("promptbeat's broker transport (PROMPTBEAT_FAST_BROKER)", WRITTEN_FOR):
        return False
    kombu_transports.TRANSPORT_ALIASES["redis"] = f"{__name__}:Transport"
    # kombu keeps the class an alias resolved to; connections made from here on resolve it again.
    kombu_transports._transport_cache.pop("redis", None)
    return True
