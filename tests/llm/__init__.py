"""Tests of model calls and connections."""
