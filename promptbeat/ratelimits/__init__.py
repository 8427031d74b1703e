"""Per-connection request, token and concurrency limits, shared by every worker through Redis."""
