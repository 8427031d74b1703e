"""The broker transport: messages flow and are acknowledged over one client per channel; URLs keep their scheme."""
import kombu
from flower.utils.broker import Broker

from promptbeat import broker


def test_a_queued_message_is_delivered_and_acknowledged_through_one_client(redis_url):
    broker.install()
    with kombu.Connection(redis_url) as connection:
        channel = connection.default_channel
        assert isinstance(channel, broker.Channel)
        queue = connection.SimpleQueue("promptbeat-test-broker", channel=channel)
        queue.put({"run": 1})
        message = queue.get(timeout=5)
        assert message.payload == {"run": 1}
        message.ack()
        # Acknowledged: nothing is left to redeliver.
        assert channel.client.hlen(channel.unacked_key) == 0
        assert channel.client.llen("promptbeat-test-broker") == 0
        # Every command sent outside the poll loop went through the same client.
        assert channel._create_client() is channel._create_client()
        queue.close()
        channel.queue_delete("promptbeat-test-broker")


def test_a_dropped_connection_pool_gets_a_new_client(redis_url):
    broker.install()
    with kombu.Connection(redis_url) as connection:
        channel = connection.default_channel
        before = channel._create_client()
        channel._disconnect_pools()
        after = channel._create_client()
        assert after is not before
        assert after.ping()


def test_the_broker_url_keeps_its_scheme_for_flower(redis_url):
    broker.install()
    with kombu.Connection(redis_url) as connection:
        uri = connection.as_uri(include_password=True)
        assert isinstance(connection.transport, broker.Transport)
    assert uri.startswith("redis://")
    # Flower picks its broker view from the scheme; an unknown one raises NotImplementedError.
    assert Broker(uri).__class__.__name__ == "Redis"
