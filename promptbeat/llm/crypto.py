"""Encryption of secrets at rest with Fernet; several keys (newest first) allow rotation."""
from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class CryptoError(RuntimeError):
    """Secrets cannot be encrypted or decrypted with the configured keys."""


def fernet(settings):
    """A MultiFernet over PROMPTBEAT_FERNET_KEYS: encrypts with the first, decrypts with any."""
    if not settings.fernet_keys:
        raise CryptoError(
            "PROMPTBEAT_FERNET_KEYS is not set, so API keys cannot be stored encrypted. Set it to one or "
            "more comma-separated keys from `python -c \"from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())\"` (newest first)."
        )
    try:
        return MultiFernet([Fernet(key) for key in settings.fernet_keys])
    except ValueError:
        raise CryptoError("PROMPTBEAT_FERNET_KEYS holds a malformed key: each must be 32 url-safe base64 bytes.") \
            from None


def encrypt(settings, plaintext):
    return fernet(settings).encrypt(plaintext.encode()).decode()


def decrypt(settings, token):
    try:
        return fernet(settings).decrypt(token.encode()).decode()
    except InvalidToken:
        raise CryptoError(
            "A stored API key cannot be decrypted with PROMPTBEAT_FERNET_KEYS: was the key that "
            "encrypted it removed from the list?"
        ) from None


def rotate(settings, token):
    """Re-encrypt a token under the first key (after a new key was put in front)."""
    return fernet(settings).rotate(token.encode()).decode()
