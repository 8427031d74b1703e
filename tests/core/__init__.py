"""Tests of the core beside the subsystems: settings, models and migrations, connections to the services."""
