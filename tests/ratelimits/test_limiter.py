"""The limiter against a real Redis: places in line, tokens, corrections, the provider's hints, concurrency."""
import pytest

from promptbeat.ratelimits import limiter, provider
from promptbeat.ratelimits.estimate import estimated_tokens
from promptbeat.ratelimits.limiter import Admission, Call
from promptbeat.ratelimits.limits import RateLimits, WaitReason

PACED = 1 + limiter.PACING_MARGIN


class Sleeps(list):
    """A sleep that records instead of sleeping."""

    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture
def settings(app):
    return app.config["PROMPTBEAT"]


def test_places_are_handed_out_first_come_first_served_at_the_rpm(settings):
    limits = RateLimits("connection:1", rpm=60)
    waits = [limiter.reserve(settings, limits, 10) for _ in range(4)]
    assert waits[0].wait_seconds == 0 and waits[0].reason is None
    # One a second (less the pacing margin), each caller one place further back: nobody jumps the line.
    for place, reservation in enumerate(waits[1:], start=1):
        assert reservation.reason == WaitReason.RATE_LIMIT
        assert place * PACED - 0.1 < reservation.wait_seconds <= place * PACED
    # Another connection has a line of its own.
    assert limiter.reserve(settings, RateLimits("connection:2", rpm=60), 10).wait_seconds == 0


def test_a_tpm_limit_counts_each_requests_tokens(settings):
    limits = RateLimits("connection:3", tpm=600)  # ten tokens a second
    assert limiter.reserve(settings, limits, 50).wait_seconds == 0
    # The first request's 50 tokens take five seconds of the budget.
    assert 5 * PACED - 0.2 < limiter.reserve(settings, limits, 10).wait_seconds <= 5 * PACED


def test_the_answers_usage_corrects_the_estimate(settings):
    limits = RateLimits("connection:4", tpm=600)
    with Call(settings, limits, 50, Admission.RESERVE, Sleeps()) as call:
        call.answered(10, {})
    # 40 tokens were given back: the next caller waits for the 10 used, not the 50 estimated.
    assert PACED - 0.2 < limiter.reserve(settings, limits, 10).wait_seconds <= PACED


def test_a_429s_retry_after_holds_every_call_on_the_connection(settings):
    limits = RateLimits("connection:5", rpm=6000)
    error = type("RateLimited", (Exception,), {"headers": {"retry-after-ms": "3000"}, "retry_after": 3.0})
    with pytest.raises(error), Call(settings, limits, 1, Admission.RESERVE, Sleeps()):
        raise error()
    held = limiter.reserve(settings, limits, 1)
    assert held.reason == WaitReason.PROVIDER and 2.5 < held.wait_seconds <= 3
    # A run whose place was reserved earlier checks the hold as its moment comes.
    sleeps = Sleeps()
    with Call(settings, limits, 1, Admission.CHECK, sleeps):
        pass
    # Held for the provider, then at most a send's spacing (10 ms at 6,000 rpm) after the call before.
    assert 2.5 < sleeps[0] <= 3 and all(wait <= 0.011 for wait in sleeps[1:])


def test_remaining_requests_at_zero_holds_the_connection_until_the_reset(settings):
    limits = RateLimits("connection:6", rpm=6000)
    with Call(settings, limits, 1, Admission.RESERVED, Sleeps()) as call:
        call.answered(1, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6s",
                          "x-ratelimit-remaining-tokens": "900", "x-ratelimit-reset-tokens": "20ms"})
    held = limiter.reserve(settings, limits, 1)
    assert held.reason == WaitReason.PROVIDER and 5.5 < held.wait_seconds <= 6


def test_max_concurrency_admits_that_many_calls_at_once(settings, redis_client):
    limits = RateLimits("connection:7", max_concurrency=1)
    sleeps = Sleeps()
    with Call(settings, limits, 1, Admission.RESERVED, sleeps):
        leases = f"{settings.redbeat_key_prefix}rl:connection:7:leases"
        assert redis_client.zcard(leases) == 1
    assert redis_client.zcard(leases) == 0
    assert sleeps == []


def test_a_connection_without_limits_costs_no_round_trip(settings):
    assert limiter.reserve(settings, None, 100) == limiter.NO_WAIT
    with Call(settings, None, 100, Admission.RESERVE, Sleeps()) as call:
        call.answered(5, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"})


@pytest.mark.parametrize("text,seconds", [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5),
                                          ("2", 2.0), ("0.5", 0.5)])
def test_provider_durations_are_read(text, seconds):
    assert provider.duration_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-1", "1x", "nan", "inf", None, "m", "1s2h"])
def test_unreadable_durations_are_ignored(text):
    assert provider.duration_seconds(text) is None


def test_a_provider_hint_is_bounded_and_needs_remaining_at_zero():
    assert provider.block_seconds({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "9s"}) == 0
    assert provider.block_seconds({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "99999h"}) == \
        provider.MAX_BLOCK_SECONDS
    assert provider.block_seconds({}, retry_after=2.5) == 2.5


def test_the_estimate_is_the_prompt_at_four_characters_a_token_plus_the_completion_allowance():
    assert estimated_tokens("x" * 400, "y" * 40, 100, 500) == 210
    assert estimated_tokens("hi", None, None, 500) == 501


def test_sends_are_spaced_by_the_rpm_even_when_their_moments_came_together(settings):
    limits = RateLimits("connection:9", rpm=600)  # a send every 100 ms, and a little more
    first, second = Sleeps(), Sleeps()
    with Call(settings, limits, 1, Admission.CHECK, first):
        pass
    # A run whose reserved moment came while its worker was busy goes no sooner than the spacing allows.
    with Call(settings, limits, 1, Admission.CHECK, second):
        pass
    assert first == [] and len(second) >= 1 and 0.09 < second[0] <= 0.11
