"""Tests of the worker role."""
