"""Tests of the beat role."""
