"""Talking to models: the client, saved connections, key encryption and the address guard."""
