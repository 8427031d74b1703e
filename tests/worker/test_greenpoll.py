"""Under gevent, a worker's readiness checks ask the operating system; polls and queries that wait still yield."""
import subprocess
import sys
import textwrap

from tests.services import ROOT, role_env

# Each script runs in a process of its own, patched as `celery -P gevent` patches before it imports the app.
PRELUDE = textwrap.dedent("""
    import sys
    from gevent import monkey
    monkey.patch_all()
    import gevent
    import worker.celery  # noqa: F401  (the worker role's hygiene runs as its app is built)

    ticks = []
    def start_ticker():
        # Another greenlet, ticking ten times in 0.1 s if the process lets it run.
        def tick():
            for _ in range(10):
                ticks.append(1)
                gevent.sleep(0.01)
        return gevent.spawn(tick)
""")

POLL_SCRIPT = PRELUDE + textwrap.dedent("""
    import select, socket
    from worker import greenpoll

    assert select.poll is greenpoll.Poll, select.poll
    reader, writer = socket.socketpair()
    check = select.poll()
    check.register(reader, select.POLLIN)
    assert check.poll(0) == []
    writer.send(b"x")
    assert [fd for fd, _ in check.poll(0)] == [reader.fileno()]
    reader.recv(1)

    ticker = start_ticker()
    assert check.poll(300) == []  # a wait of 0.3 s, nothing to read
    assert len(ticks) == 10, ticks  # the other greenlet ran meanwhile
    ticker.join()
    print("ok")
""")

# With PROMPTBEAT_FAST_GEVENT_POLL off, or a gevent it was not written for, gevent's own poll stays.
GEVENT_POLL_SCRIPT = PRELUDE + textwrap.dedent("""
    import select
    from gevent import monkey
    from worker import greenpoll

    assert select.poll is not greenpoll.Poll
    assert select.poll is not monkey.get_original("select", "poll"), "gevent's poll is in place"
    print("ok")
""")

PSYCOPG2_SCRIPT = PRELUDE + textwrap.dedent("""
    import psycopg2

    connection = psycopg2.connect(sys.argv[1])
    ticker = start_ticker()
    cursor = connection.cursor()
    cursor.execute("SELECT pg_sleep(0.3), 42")
    assert cursor.fetchone()[1] == 42
    assert len(ticks) == 10, ticks  # the other greenlet ran while the query waited
    ticker.join()
    try:
        cursor.execute("SELECT 1/0")
    except psycopg2.errors.DivisionByZero:
        print("ok")
""")


def run_script(script, tmp_path, *args, settings=None):
    env = role_env({"SECRET_KEY": "x", "DATABASE_URL": "postgresql://127.0.0.1:1/unused",
                    "REDIS_URL": "redis://127.0.0.1:1/0", **(settings or {})})
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-c", script, *args], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
    return result.stderr


def test_a_gevent_worker_checks_readiness_directly_and_still_waits_cooperatively(tmp_path):
    run_script(POLL_SCRIPT, tmp_path)


def test_with_the_setting_off_a_gevent_worker_keeps_gevents_poll(tmp_path):
    run_script(GEVENT_POLL_SCRIPT, tmp_path, settings={"PROMPTBEAT_FAST_GEVENT_POLL": "false"})


def test_with_a_gevent_it_was_not_written_for_the_poll_is_left_off_with_a_warning(tmp_path):
    # Set once gevent has patched, before the worker's app is built.
    script = GEVENT_POLL_SCRIPT.replace("import worker.celery", "from promptbeat import versions\n"
                                        "from worker import greenpoll\n"
                                        "greenpoll.WRITTEN_FOR = (versions.WrittenFor('gevent', '<1'),)\n"
                                        "import worker.celery", 1)
    log = run_script(script, tmp_path)
    assert "PROMPTBEAT_FAST_GEVENT_POLL" in log and "gevent<1" in log


def test_a_gevent_worker_runs_other_greenlets_while_a_query_waits(tmp_path, database_url):
    run_script(PSYCOPG2_SCRIPT, tmp_path, database_url)
