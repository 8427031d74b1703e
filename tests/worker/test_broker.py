"""The broker transport: messages flow and are acknowledged over one client per channel; URLs keep their scheme."""
import threading

import kombu
from flower.utils.broker import Broker

from worker import broker


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


def test_many_threads_acknowledging_at_once_wait_for_a_connection_instead_of_failing(redis_url):
    broker.install()
    queue_name = "promptbeat-test-broker-acks"
    # One connection for everything sent outside the poll loop: every concurrent ack must wait its turn.
    with kombu.Connection(redis_url, transport_options={"max_connections": 1}) as connection:
        channel = connection.default_channel
        queue = connection.SimpleQueue(queue_name, channel=channel)
        messages = []
        for number in range(30):
            queue.put({"run": number})
        for _ in range(30):
            messages.append(queue.get(timeout=5))
        start, errors = threading.Barrier(len(messages)), []

        def acknowledge(message):
            start.wait()
            try:
                message.ack()
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(exc))

        threads = [threading.Thread(target=acknowledge, args=(message,)) for message in messages]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert channel.client.hlen(channel.unacked_key) == 0
        queue.close()
        channel.queue_delete(queue_name)


def test_a_consumer_at_its_prefetch_limit_takes_the_next_message_soon_after_an_ack(redis_url):
    """Without an event loop (the gevent pool's way), an ack must not wait out the whole drain timeout."""
    broker.install()
    queue_name = "promptbeat-test-broker-credit"
    with kombu.Connection(redis_url) as connection:
        channel = connection.channel()
        channel.basic_qos(0, 1, False)
        received = []
        consumer = kombu.Consumer(channel, queues=[kombu.Queue(queue_name)], callbacks=[
            lambda body, message: received.append(message)])
        producer = kombu.Producer(connection.default_channel)
        for number in range(2):
            producer.publish({"run": number}, routing_key=queue_name, declare=[kombu.Queue(queue_name)])
        with consumer:
            connection.drain_events(timeout=5)
            assert [m.payload for m in received] == [{"run": 0}]
            # The first message still runs: the prefetch limit of one is reached. It finishes shortly.
            acker = threading.Timer(0.1, received[0].ack)
            acker.start()
            # kombu alone waits out this whole timeout (or a second) before it looks again.
            connection.drain_events(timeout=0.8)
            acker.join()
            assert [m.payload for m in received] == [{"run": 0}, {"run": 1}]
            received[1].ack()
        channel.queue_delete(queue_name)
