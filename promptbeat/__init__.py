"""promptbeat: run LLM prompts on a schedule."""
