"""Checks of one text field, shared by the connection and channel validators."""
import unicodedata


def one_line(value, field, errors, limit, required=False):
    """value stripped, with a message in errors[field] when it is not text, missing, too long or has control characters."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        errors[field] = "Must be text."
        return None
    value = value.strip()
    if required and not value:
        errors[field] = "This field is required."
    elif len(value) > limit:
        errors[field] = f"Must be at most {limit} characters."
    elif any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        errors[field] = "Must not contain control characters (such as NUL or a line break)."
    return value
