"""Tenants' integration secrets (a Stripe signing secret, an ad platform's token) encrypted at rest.

AES-256-GCM with a key ring (``TRAILMARK_SECRET_KEYS``, newest first). A ciphertext is
``version | key id length | key id | nonce | ciphertext+tag``: it names the key that made it, so a rotation is
"add a new key in front" — new secrets use it, old ones still decrypt — and a key is dropped only once nothing
encrypted with it is left. The associated data binds a ciphertext to where it belongs (e.g. the tenant and the
integration): copied into another tenant's row, it fails to decrypt instead of leaking there.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tenants.settings import SecretKey, get_settings

__all__ = ["SecretBox", "UndecryptableSecret", "decrypt", "encrypt", "get_secret_box"]

_VERSION = 1
_NONCE_BYTES = 12


class UndecryptableSecret(Exception):
    """The ciphertext was altered, belongs elsewhere (other associated data), or its key left the ring.
    Never carries the ciphertext or the plaintext."""


class SecretBox:
    """Encrypts with the newest key of the ring; decrypts with whichever key a ciphertext names."""

    def __init__(self, keys: tuple[SecretKey, ...]) -> None:
        if not keys:
            raise ValueError("at least one secret key is required")
        self._newest = keys[0]
        self._by_id = {key.key_id: AESGCM(key.secret) for key in keys}

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        key_id = self._newest.key_id.encode()
        nonce = os.urandom(_NONCE_BYTES)  # random 96-bit nonces: safe far beyond the number of secrets stored
        sealed = self._by_id[self._newest.key_id].encrypt(nonce, plaintext, associated_data)
        return bytes([_VERSION, len(key_id)]) + key_id + nonce + sealed

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        if len(ciphertext) < 2 or ciphertext[0] != _VERSION:
            raise UndecryptableSecret("not a secret this key ring wrote")
        id_end = 2 + ciphertext[1]
        key_id = ciphertext[2:id_end].decode(errors="replace")
        aead = self._by_id.get(key_id)
        if aead is None:
            raise UndecryptableSecret(f"secret key {key_id!r} is not in TRAILMARK_SECRET_KEYS")
        nonce, sealed = ciphertext[id_end : id_end + _NONCE_BYTES], ciphertext[id_end + _NONCE_BYTES :]
        try:
            return aead.decrypt(nonce, sealed, associated_data)
        except (InvalidTag, ValueError):
            raise UndecryptableSecret("the secret was altered or belongs elsewhere") from None

    def key_id_of(self, ciphertext: bytes) -> str:
        """Which key encrypted ``ciphertext`` (to find what a rotation still has to re-encrypt)."""
        return ciphertext[2 : 2 + ciphertext[1]].decode(errors="replace")


_box: SecretBox | None = None


def get_secret_box() -> SecretBox:
    """The process's box, built from ``TRAILMARK_SECRET_KEYS`` (or the embedded default's generated ring)."""
    global _box  # noqa: PLW0603 - one per process, settings never change at run time
    if _box is None:
        _box = SecretBox(get_settings().secret_keys)
    return _box


def encrypt(plaintext: bytes, associated_data: bytes) -> bytes:
    """``plaintext`` sealed with the newest key; only the same ``associated_data`` opens it."""
    return get_secret_box().encrypt(plaintext, associated_data)


def decrypt(ciphertext: bytes, associated_data: bytes) -> bytes:
    """The plaintext, or :class:`UndecryptableSecret`."""
    return get_secret_box().decrypt(ciphertext, associated_data)
