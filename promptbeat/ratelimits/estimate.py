"""A request's tokens before it is sent: the prompt's length by a rule of thumb plus its completion allowance."""

# English text runs at about four characters a token; the answer's usage corrects the estimate.
CHARS_PER_TOKEN = 4


def estimated_tokens(prompt, system_prompt, max_tokens, default_completion_tokens):
    """Prompt and system prompt at CHARS_PER_TOKEN, plus max_tokens (or the default allowance)."""
    return prompt_tokens(prompt, system_prompt) + (max_tokens if max_tokens else default_completion_tokens)


def prompt_tokens(prompt, system_prompt):
    """The prompt and system prompt's tokens at CHARS_PER_TOKEN; at least one."""
    chars = len(prompt or "") + len(system_prompt or "")
    return max(1, -(-chars // CHARS_PER_TOKEN))
