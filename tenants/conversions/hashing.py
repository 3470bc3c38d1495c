"""User data as each ad platform matches it: normalised, then SHA-256 (lowercase hex).

Meta and Google normalise differently: Google removes the dots and ``+suffix`` of a Gmail address and keeps the
``+`` of an E.164 phone; Meta keeps an address as typed (trimmed, lower case) and wants a phone's digits only.
The specification's test vectors are tests (``tests/test_conversions.py``).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

__all__ = [
    "google_email",
    "google_phone",
    "meta_city",
    "meta_country",
    "meta_email",
    "meta_name",
    "meta_phone",
    "meta_zip",
    "sha256",
]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_GMAIL = frozenset({"gmail.com", "googlemail.com"})


def sha256(normalized: str | None) -> str | None:
    """The hash of a normalised value; None for a blank one (never the hash of ""). A value that already is a
    SHA-256 (64 hex digits) is passed through, so nothing is hashed twice."""
    if not normalized:
        return None
    if _HEX64.fullmatch(normalized):
        return normalized
    return hashlib.sha256(normalized.encode()).hexdigest()


def _letters(value: str) -> str:
    """Lower case without punctuation, spaces or symbols (letters of any script and digits stay)."""
    folded = unicodedata.normalize("NFC", value.strip().lower())
    return "".join(ch for ch in folded if ch.isalnum())


def meta_email(value: str | None) -> str | None:
    return value.strip().lower() or None if value else None


def meta_phone(value: str | None) -> str | None:
    """Digits only, with the country code, no ``+`` and no leading zeros."""
    digits = re.sub(r"[^0-9]", "", value or "").lstrip("0")
    return digits or None


def meta_name(value: str | None) -> str | None:
    return _letters(value) or None if value else None


def meta_city(value: str | None) -> str | None:
    return _letters(value) or None if value else None


def meta_zip(value: str | None, country: str | None = None) -> str | None:
    """No spaces or dashes, lower case; a US ZIP+4 keeps its first five digits."""
    if not value:
        return None
    compact = re.sub(r"[\s-]", "", value.strip().lower())
    if (country or "us").lower() == "us" and re.fullmatch(r"[0-9]{5}([0-9]{4})?", compact):
        return compact[:5]
    return compact or None


def meta_country(value: str | None) -> str | None:
    code = (value or "").strip().lower()
    return code if re.fullmatch(r"[a-z]{2}", code) else None


def google_email(value: str | None) -> str | None:
    """Trimmed, lower case; for gmail.com and googlemail.com, the local part without dots and ``+suffix``."""
    address = (value or "").strip().lower()
    if not address:
        return None
    local, at, domain = address.rpartition("@")
    if at and domain in _GMAIL:
        local = local.split("+", 1)[0].replace(".", "")
        return f"{local}@{domain}"
    return address


def google_phone(value: str | None) -> str | None:
    """E.164 with its ``+``: ``+18005550102``. A number without ``+`` is taken as already with its country code."""
    digits = re.sub(r"[^0-9]", "", value or "").lstrip("0")
    return f"+{digits}" if digits else None
