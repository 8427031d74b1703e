"""Under gevent, readiness checks (a poll with no wait) ask the operating system directly."""
import select

from promptbeat import versions

# Poll stands in for the select.poll gevent's monkey-patching installs, and reaches the original through
# gevent.monkey.get_original: the gevent versions it was written and measured against
# (tests/worker/test_library_internals.py fails when the installed one leaves them).
WRITTEN_FOR = (versions.WrittenFor("gevent", ">=26,<27"),)

# What select.poll().register() watches when given no mask, as in the standard library.
DEFAULT_MASK = select.POLLIN | select.POLLPRI | select.POLLOUT


def install():
    """Replace gevent's select.poll with one that answers poll(0) without gevent's loop.

    redis-py checks a pooled connection for unread data, and httpcore an idle connection for
    a server close, with select.poll() and a zero timeout, several times a run. gevent's poll
    starts and stops watchers on its loop for each, many times the cost of the system call
    (docs/performance.md has the measurements). A zero-timeout poll never blocks, so the operating
    system's is safe under gevent; any poll that may wait still goes through gevent. Returns whether
    it was installed: only in a process gevent has patched, and only with gevent inside WRITTEN_FOR.
    """
    global _direct_poll, _green_poll
    from gevent import monkey

    direct_poll = monkey.get_original("select", "poll")
    if select.poll in (direct_poll, Poll):
        return False
    if not versions.supported("promptbeat's gevent poll (PROMPTBEAT_FAST_GEVENT_POLL)", WRITTEN_FOR):
        return False
    _direct_poll, _green_poll = direct_poll, select.poll
    select.poll = Poll
    return True


_direct_poll = _green_poll = None


class Poll:
    """select.poll: poll(0) goes straight to the operating system, a poll that may wait to gevent."""

    def __init__(self):
        self._masks = {}
        self._direct = _direct_poll()

    def register(self, fd, eventmask=DEFAULT_MASK):
        self._masks[fd] = eventmask
        self._direct.register(fd, eventmask)

    def modify(self, fd, eventmask):
        self._masks[fd] = eventmask
        self._direct.modify(fd, eventmask)

    def unregister(self, fd):
        del self._masks[fd]
        self._direct.unregister(fd)

    def poll(self, timeout=None):
        if timeout == 0:
            return self._direct.poll(0)
        # A wait: made through gevent, so the other greenlets run meanwhile.
        green = _green_poll()
        for fd, mask in self._masks.items():
            green.register(fd, mask)
        return green.poll(timeout)
