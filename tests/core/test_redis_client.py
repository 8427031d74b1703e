"""The workers' shared Redis client under more threads than it has connections."""
import threading

from promptbeat import redis_client


def test_more_threads_than_connections_wait_for_one_instead_of_failing(redis_url):
    client = redis_client.get_client(redis_url)
    key = "promptbeat-test:empty-list"
    client.delete(key)
    errors, done = [], []

    def hold_a_connection():
        try:
            # Holds its connection for 0.3 s: twice the pool's size of threads cannot all have one at once.
            client.blpop([key], timeout=0.3)
            done.append(1)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(repr(exc))

    threads = [threading.Thread(target=hold_a_connection) for _ in range(redis_client.MAX_CONNECTIONS * 2 + 10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(done) == len(threads)
