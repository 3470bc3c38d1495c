"""Builders and readers for commissions: a two-tier program whose products earn, purchases through the real REST
API, and the commissions the workers stored."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import text

from tenants.isolation import tenant_session
from tenants.partners import service as partners
from tests.conftest import TenantHandle, wait_until
from tests.support.partners import ProgramHandle, make_program

__all__ = ["buy", "commissions_of", "credit_of", "earning_program", "set_rate", "wait_commissions"]

COURSE = "course"
"""Earns 30 % at level 1 and 5.00 flat per unit at level 2."""


def earning_program(tenant: TenantHandle, *names: str, **terms: Any) -> ProgramHandle:
    """``make_program`` with two tiers, the product ``course`` added, a name unique to the tenant (the mails
    say it), and ``rita`` (when named) recruiting ``pat``."""
    program = make_program(tenant, *names, **{"tiers": 2, "hold_days": 30, **terms})
    with tenant_session(tenant.tenant_id) as session:
        partners.update_program(session, program.program_id, partners.ProgramSettings(name=f"Friends of {tenant.slug}"))
        partners.set_product(
            session,
            program.program_id,
            COURSE,
            partners.CommissionRate("percent", 3000),
            partners.CommissionRate("flat", 500),
        )
        if "rita" in program.partners and "pat" in program.partners:
            partners.update_partner(session, program.partners["pat"].id, parent_partner_id=program.partners["rita"].id)
    return program


def set_rate(program: ProgramHandle, basis_points: int) -> None:
    with tenant_session(program.tenant.tenant_id) as session:
        partners.set_product(
            session, program.program_id, COURSE, partners.CommissionRate("percent", basis_points), None
        )


def buy(client: Any, tenant: TenantHandle, amount: int = 5000, **order: Any) -> dict[str, Any]:
    """A sale of ``course`` (net ``amount``, no tax) reported by the shop's server."""
    body = {
        "external_id": f"order-{uuid4().hex[:12]}",
        "amount": amount,
        "currency": "EUR",
        "email": "monica@buyers.example",
        "items": [{"product": COURSE, "quantity": 1, "unit_amount": amount}],
        **order,
    }
    answer = client.post("/api/v1/purchases", json=body, headers=tenant.headers)
    assert answer.status_code in {200, 201}, answer.text
    return dict(answer.json())


def commissions_of(tenant: TenantHandle, **where: Any) -> list[dict[str, Any]]:
    condition = " AND ".join(f"{name} = :{name}" for name in where) or "true"
    with tenant_session(tenant.tenant_id) as session:
        rows = session.execute(text(f"SELECT * FROM commissions WHERE {condition} ORDER BY level, created_at"), where)
        return [dict(row._mapping) for row in rows]


def credit_of(tenant: TenantHandle, purchase_id: UUID | str, timeout: float = 60) -> dict[str, Any]:
    """The stored credit of a purchase, once the worker made it."""

    def stored() -> dict[str, Any] | None:
        with tenant_session(tenant.tenant_id) as session:
            row = session.execute(
                text("SELECT * FROM purchase_credits WHERE purchase_id = :p"), {"p": purchase_id}
            ).first()
            return dict(row._mapping) if row else None

    return dict(wait_until(stored, timeout, f"the credit of purchase {purchase_id}", interval=0.1))


def wait_commissions(tenant: TenantHandle, count: int, timeout: float = 60, **where: Any) -> list[dict[str, Any]]:
    return list(
        wait_until(
            lambda: (rows := commissions_of(tenant, **where)) and len(rows) >= count and rows,
            timeout,
            f"{count} commission(s) where {where}",
            interval=0.1,
        )
    )
