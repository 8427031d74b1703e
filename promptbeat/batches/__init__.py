"""Batch mode: runs collected, sent through the provider's Batch API, polled and finished by beat's fixed jobs."""
