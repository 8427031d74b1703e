"""Notifications: channels, when a run notifies them, and delivery by webhook, Slack or email with a ledger."""
