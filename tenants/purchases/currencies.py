"""ISO 4217: the currencies a purchase may be in."""

from __future__ import annotations

__all__ = ["CURRENCIES", "format_money", "is_currency", "minor_unit_digits"]

CURRENCIES = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD
    CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL
    GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD
    KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR
    NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN
    SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG
    XAU XCD XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG ZWL""".split()  # noqa: SIM905 - a table reads best as one
)
"""Active codes of ISO 4217 (including funds and precious metals, which payment providers may report)."""


def is_currency(code: str) -> bool:
    """True for an upper-case ISO 4217 code."""
    return code in CURRENCIES


_ZERO_DIGITS = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF"}
    | {"XOF", "XPF"}
)
_THREE_DIGITS = frozenset({"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"})


def minor_unit_digits(code: str) -> int:
    """How many decimals the currency's minor unit has (JPY 0, USD 2, KWD 3)."""
    return 0 if code in _ZERO_DIGITS else 3 if code in _THREE_DIGITS else 2


def format_money(amount: int, code: str) -> str:
    """``1999, "USD"`` → ``"19.99 USD"``: minor units shown in the currency's own unit."""
    digits = minor_unit_digits(code)
    sign, value = ("-" if amount < 0 else ""), abs(amount)
    whole, part = divmod(value, 10**digits)
    return f"{sign}{whole:,}{f'.{part:0{digits}d}' if digits else ''} {code}"
