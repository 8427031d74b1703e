"""Tests of the run lifecycle."""
