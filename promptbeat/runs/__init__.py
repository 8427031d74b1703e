"""A run of a task: its states and their one store, the pipeline that runs it, and the rules around it."""
