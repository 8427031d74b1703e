"""What a run's answer is: its schema, its parsed value, and how it changed since the previous run."""
