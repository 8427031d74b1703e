"""Scheduling: schedule maths, beat entries and keeping them in step with the database."""
