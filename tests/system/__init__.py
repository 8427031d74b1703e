"""Tests of the whole system: every role as processes, compose, faults."""
