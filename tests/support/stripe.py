"""Stripe as the tests play it: events shaped as Stripe documents them, signed with the endpoint's secret
exactly as Stripe signs (``Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``), posted
to the tenant's real webhook endpoint."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

__all__ = ["charge_refunded", "checkout_completed", "invoice_paid", "sign", "signed_delivery"]


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe sends for ``payload``."""
    at = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def signed_delivery(event: dict[str, Any], secret: str, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The raw body and headers of one delivery of ``event``."""
    payload = json.dumps(event, separators=(",", ":")).encode()
    return payload, {"Stripe-Signature": sign(payload, secret, timestamp), "Content-Type": "application/json"}


def _event(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": event_type,
        "data": {"object": obj},
    }


def checkout_completed(
    *,
    session_id: str,
    amount_total: int,
    email: str,
    payment_intent: str | None = None,
    currency: str = "usd",
    tax: int = 0,
    payment_status: str = "paid",
    client_reference_id: str | None = None,
    metadata: dict[str, str] | None = None,
    mode: str = "payment",
    subscription: str | None = None,
    invoice: str | None = None,
) -> dict[str, Any]:
    return _event(
        "checkout.session.completed",
        {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": amount_total - tax,
            "amount_total": amount_total,
            "client_reference_id": client_reference_id,
            "currency": currency,
            "customer": "cus_test",
            "customer_details": {"email": email, "name": "Monica Test", "tax_exempt": "none", "tax_ids": []},
            "customer_email": None,
            "invoice": invoice,
            "livemode": False,
            "metadata": metadata or {},
            "mode": mode,
            "payment_intent": payment_intent,
            "payment_status": payment_status,
            "status": "complete",
            "subscription": subscription,
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": tax},
        },
    )


def invoice_paid(
    *,
    invoice_id: str,
    amount_paid: int,
    email: str,
    subscription: str,
    product: str = "prod_test",
    payment_intent: str | None = None,
    billing_reason: str = "subscription_cycle",
    tax: int = 0,
    currency: str = "usd",
) -> dict[str, Any]:
    return _event(
        "invoice.paid",
        {
            "id": invoice_id,
            "object": "invoice",
            "amount_paid": amount_paid,
            "billing_reason": billing_reason,
            "charge": None,
            "currency": currency,
            "customer": "cus_test",
            "customer_email": email,
            "customer_name": "Monica Test",
            "lines": {
                "object": "list",
                "data": [
                    {
                        "id": "il_test",
                        "object": "line_item",
                        "amount": amount_paid - tax,
                        "description": "1 x Pro plan",
                        "price": {"id": "price_test", "object": "price", "product": product},
                        "quantity": 1,
                    }
                ],
            },
            "paid": True,
            "payment_intent": payment_intent,
            "status": "paid",
            "subscription": subscription,
            "subscription_details": {"metadata": {}},
            "tax": tax,
        },
    )


def charge_refunded(
    *, charge_id: str, payment_intent: str, amount: int, amount_refunded: int, currency: str = "usd"
) -> dict[str, Any]:
    """``amount_refunded`` is cumulative, as Stripe sends it: everything refunded of the charge so far."""
    return _event(
        "charge.refunded",
        {
            "id": charge_id,
            "object": "charge",
            "amount": amount,
            "amount_captured": amount,
            "amount_refunded": amount_refunded,
            "currency": currency,
            "payment_intent": payment_intent,
            "refunded": amount_refunded == amount,
            "status": "succeeded",
        },
    )
