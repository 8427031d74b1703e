"""Tests of the web role: pages, API and their safety."""
