"""The partner portal at ``/p/{tenant_slug}``: apply, log in and out, reset the password; then home, links and
promo codes with the SubID builder, referrals, commissions, payouts, reports by day and SubID, sub-partners and
settings.

Pages are templates of ``partners/`` rendered with :func:`api.web.page`; every form carries the one CSRF token
(:func:`api.web.checked_form`); a refusal is raised (:class:`~api.web.FormRefused`, or a domain error) and
rendered by :func:`api.web.templates.refused`, the form's own page again when the partner can correct it there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import FromPath, Parameter
from litestar.response import Template

from api.cookies import secure_cookies
from api.dashboard.login import client_address, problem_text
from api.pages.serving import tenant_of_slug
from api.web import FormRefused, checked_form, page
from api.web.templates import refused
from tenants.errors import DomainError, Invalid, NotFound, RateLimited
from tenants.partners import portal
from tenants.partners.report import report_range

__all__ = ["PartnerPortalController", "partner_cookie_name"]

T = TypeVar("T")

SECTIONS = [
    ("home", "Home", ""),
    ("links", "Links and codes", "/links"),
    ("referrals", "Referrals", "/referrals"),
    ("commissions", "Commissions", "/commissions"),
    ("payouts", "Payouts", "/payouts"),
    ("report", "Reports", "/report"),
    ("sub-partners", "Sub-partners", "/sub-partners"),
    ("settings", "Settings", "/settings"),
]
CHECK_YOUR_EMAIL = (
    "We sent a message to the address you gave. Follow the link in it to go on (it is valid for a while)."
)
"""The one answer to an application or a reset request, whoever the address belongs to."""
_SID = re.compile(r"[^A-Za-z0-9_-]")


def partner_cookie_name() -> str:
    """``__Host-`` requires Secure (https); a plain http development server gets a plain name."""
    return "__Host-tm_partner" if secure_cookies() else "tm_partner"


class PartnerLoginRequired(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def _redirect(location: str, cookies: list[Cookie] | None = None) -> Response[Any]:
    return Response(
        b"", status_code=303, headers={"Location": location, "Cache-Control": "no-store"}, cookies=cookies or []
    )


def _login_required(_: Request[Any, Any, Any], exc: PartnerLoginRequired) -> Response[Any]:
    return _redirect(exc.location)


def _domain_error(request: Request[Any, Any, Any], error: DomainError) -> Response[Any]:
    retry_after = error.retry_after if isinstance(error, RateLimited) else None
    return refused(request, FormRefused(problem_text(error), error.status, retry_after=retry_after))


async def _call(function: Callable[[], T], form: str | None = None, **context: Any) -> T:
    """``function`` in a worker thread; a refusal of what the partner typed shows ``form`` again with the message."""
    try:
        return await anyio.to_thread.run_sync(function)
    except DomainError as error:
        if form is None or isinstance(error, RateLimited):
            raise
        raise FormRefused(problem_text(error), error.status, template=form, context=context) from error


def _base(tenant_slug: str) -> str:
    return f"/p/{tenant_slug}"


async def _tenant(tenant_slug: str) -> UUID:
    tenant_id = await tenant_of_slug(tenant_slug)
    if tenant_id is None:
        raise NotFound("this partner portal does not exist")
    return tenant_id


async def _partner(request: Request[Any, Any, Any], tenant_slug: str) -> tuple[UUID, UUID]:
    """The tenant and the logged-in partner of this portal; else the browser goes to the portal's login."""
    tenant_id = await _tenant(tenant_slug)
    cookie = request.cookies.get(partner_cookie_name())
    partner_id = await anyio.to_thread.run_sync(portal.partner_of_session, tenant_id, cookie)
    if partner_id is None:
        raise PartnerLoginRequired(f"{_base(tenant_slug)}/login")
    return tenant_id, partner_id


def _logged_in(tenant_slug: str, login: portal.PortalLogin) -> Response[Any]:
    cookie = Cookie(
        key=partner_cookie_name(),
        value=login.session_id,
        httponly=True,
        secure=secure_cookies(),
        samesite="lax",
        path="/",
    )
    return _redirect(_base(tenant_slug), [cookie])


def _screen(
    request: Request[Any, Any, Any], tenant_slug: str, template: str, section: str, heading: str, **context: Any
) -> Template:
    return page(
        request,
        f"partners/{template}",
        base=_base(tenant_slug),
        sections=SECTIONS,
        section=section,
        heading=heading,
        **context,
    )


class PartnerPortalController(Controller):
    path = "/p/{tenant_slug:str}"
    include_in_schema = False
    exception_handlers = {DomainError: _domain_error, FormRefused: refused, PartnerLoginRequired: _login_required}

    @get("/login")
    async def login_form(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Template:
        await _tenant(tenant_slug)
        base = _base(tenant_slug)
        return page(request, "partners/login.html", heading="Log in", action=f"{base}/login", base=base)

    @post("/login", status_code=303)
    async def login(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Response[Any]:
        tenant_id, values = await _tenant(tenant_slug), await checked_form(request)
        base = _base(tenant_slug)
        login = await _call(
            lambda: portal.log_in(
                tenant_id,
                email=values.get("email", ""),
                password=values.get("password", ""),
                ip=client_address(request),
                presented_session=request.cookies.get(partner_cookie_name()),
            ),
            "partners/login.html",
            heading="Log in",
            action=f"{base}/login",
            base=base,
        )
        return _logged_in(tenant_slug, login)

    @post("/logout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Response[Any]:
        tenant_id = await _tenant(tenant_slug)
        await checked_form(request)
        await anyio.to_thread.run_sync(portal.log_out, tenant_id, request.cookies.get(partner_cookie_name()))
        expired = Cookie(key=partner_cookie_name(), value="", max_age=0, path="/", secure=secure_cookies())
        return _redirect(f"{_base(tenant_slug)}/login", [expired])

    @get("/apply")
    async def apply_form(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Template:
        tenant_id = await _tenant(tenant_slug)
        programs = await anyio.to_thread.run_sync(portal.programs_open, tenant_id)
        if not programs:
            raise NotFound("this business has no partner program")
        base = _base(tenant_slug)
        return page(
            request, "partners/apply.html", heading="Apply", action=f"{base}/apply", base=base, programs=programs
        )

    @post("/apply", status_code=200)
    async def apply(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Template:
        """Only mails a link to the address (or, to a partner, a reminder): the same answer for every address."""
        tenant_id, values = await _tenant(tenant_slug), await checked_form(request)
        base = _base(tenant_slug)
        programs = await anyio.to_thread.run_sync(portal.programs_open, tenant_id)
        try:
            program_id = UUID(values.get("program_id", ""))
        except ValueError:
            raise FormRefused(
                "choose a program",
                422,
                template="partners/apply.html",
                context={"heading": "Apply", "action": f"{base}/apply", "base": base, "programs": programs},
            ) from None
        await _call(
            lambda: portal.apply(
                tenant_id,
                program_id=program_id,
                email=values.get("email", ""),
                first_name=values.get("first_name") or None,
                ip=client_address(request),
            ),
            "partners/apply.html",
            heading="Apply",
            action=f"{base}/apply",
            base=base,
            programs=programs,
        )
        return page(request, "partners/notice.html", heading="Check your email", detail=CHECK_YOUR_EMAIL, base=base)

    @get("/apply/confirm")
    async def confirm_form(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Template:
        tenant_id, base = await _tenant(tenant_slug), _base(tenant_slug)
        token = request.query_params.get("token", "")
        pending = await _link(lambda: portal.application(tenant_id, token), base)
        return page(
            request,
            "partners/set_password.html",
            heading="Choose your password",
            action=f"{base}/apply/confirm",
            token=token,
            email=pending.email,
        )

    @post("/apply/confirm", status_code=303)
    async def confirm(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Response[Any]:
        tenant_id, values = await _tenant(tenant_slug), await checked_form(request)
        base, token = _base(tenant_slug), values.get("token", "")
        pending = await _link(lambda: portal.application(tenant_id, token), base)
        login = await _call(
            lambda: portal.complete_application(
                tenant_id,
                token=token,
                password=values.get("password", ""),
                ip=client_address(request),
                presented_session=request.cookies.get(partner_cookie_name()),
            ),
            "partners/set_password.html",
            heading="Choose your password",
            action=f"{base}/apply/confirm",
            token=token,
            email=pending.email,
        )
        return _logged_in(tenant_slug, login)

    @get("/password/reset")
    async def reset_form(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Template:
        await _tenant(tenant_slug)
        base = _base(tenant_slug)
        return page(
            request, "partners/reset.html", heading="Reset your password", action=f"{base}/password/reset", base=base
        )

    @post("/password/reset", status_code=200)
    async def reset(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Template:
        tenant_id, values = await _tenant(tenant_slug), await checked_form(request)
        await _call(lambda: portal.request_password_reset(tenant_id, values.get("email", ""), client_address(request)))
        return page(
            request,
            "partners/notice.html",
            heading="Check your email",
            detail=CHECK_YOUR_EMAIL,
            base=_base(tenant_slug),
        )

    @get("/password/set")
    async def set_password_form(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Template:
        tenant_id, base = await _tenant(tenant_slug), _base(tenant_slug)
        token = request.query_params.get("token", "")
        email = await _link(lambda: portal.check_reset_link(tenant_id, token), base)
        return page(
            request,
            "partners/set_password.html",
            heading="Choose your password",
            action=f"{base}/password/set",
            token=token,
            email=email,
        )

    @post("/password/set", status_code=303)
    async def set_password(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Response[Any]:
        tenant_id, values = await _tenant(tenant_slug), await checked_form(request)
        base, token = _base(tenant_slug), values.get("token", "")
        email = await _link(lambda: portal.check_reset_link(tenant_id, token), base)
        login = await _call(
            lambda: portal.reset_password(
                tenant_id,
                token=token,
                password=values.get("password", ""),
                ip=client_address(request),
                presented_session=request.cookies.get(partner_cookie_name()),
            ),
            "partners/set_password.html",
            heading="Choose your password",
            action=f"{base}/password/set",
            token=token,
            email=email,
        )
        return _logged_in(tenant_slug, login)

    @get("/")
    async def home(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Template:
        tenant_id, partner_id = await _partner(request, tenant_slug)
        summary = await anyio.to_thread.run_sync(portal.home, tenant_id, partner_id)
        return _screen(request, tenant_slug, "home.html", "home", "Partner portal", home=summary)

    @get("/links")
    async def links(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Template:
        tenant_id, partner_id = await _partner(request, tenant_slug)
        sid = _SID.sub("", request.query_params.get("sid", ""))[:100]
        found = await anyio.to_thread.run_sync(portal.links, tenant_id, partner_id, sid or None)
        return _screen(request, tenant_slug, "links.html", "links", "Links and codes", links=found, sid=sid)

    @get("/referrals")
    async def referrals(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Template:
        tenant_id, partner_id = await _partner(request, tenant_slug)
        shared, found = await anyio.to_thread.run_sync(portal.referrals, tenant_id, partner_id)
        return _screen(
            request, tenant_slug, "referrals.html", "referrals", "Referrals", shared=shared.value, referrals=found
        )

    @get("/commissions")
    async def commissions(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Template:
        tenant_id, partner_id = await _partner(request, tenant_slug)
        found = await anyio.to_thread.run_sync(portal.commissions, tenant_id, partner_id)
        return _screen(request, tenant_slug, "commissions.html", "commissions", "Commissions", commissions=found)

    @get("/payouts")
    async def payouts(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Template:
        tenant_id, partner_id = await _partner(request, tenant_slug)
        found = await anyio.to_thread.run_sync(portal.payouts, tenant_id, partner_id)
        summary = await anyio.to_thread.run_sync(portal.home, tenant_id, partner_id)
        return _screen(request, tenant_slug, "payouts.html", "payouts", "Payouts", payouts=found, home=summary)

    @get("/report")
    async def report(
        self,
        request: Request[Any, Any, Any],
        tenant_slug: FromPath[str],
        start: Annotated[str | None, Parameter(required=False)] = None,
        end: Annotated[str | None, Parameter(required=False)] = None,
    ) -> Template:
        """The partner's own clicks, leads, sales and commissions per day and per SubID (the dashboard's report,
        read in the partner's session)."""
        tenant_id, partner_id = await _partner(request, tenant_slug)
        first, last = report_range(start, end, datetime.now(UTC).date())
        found = await anyio.to_thread.run_sync(portal.report, tenant_id, partner_id, first, last)
        return _screen(request, tenant_slug, "report.html", "report", "Reports", report=found)

    @get("/sub-partners")
    async def sub_partners(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Template:
        tenant_id, partner_id = await _partner(request, tenant_slug)
        found = await anyio.to_thread.run_sync(portal.sub_partners, tenant_id, partner_id)
        summary = await anyio.to_thread.run_sync(portal.home, tenant_id, partner_id)
        return _screen(
            request,
            tenant_slug,
            "sub_partners.html",
            "sub-partners",
            "Sub-partners",
            partners=found,
            tiers=summary.tiers,
        )

    @get("/settings")
    async def settings_form(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Template:
        tenant_id, partner_id = await _partner(request, tenant_slug)
        current = await anyio.to_thread.run_sync(portal.payout_email, tenant_id, partner_id)
        saved = request.query_params.get("saved") == "1"
        return _screen(
            request, tenant_slug, "settings.html", "settings", "Settings", payout_email=current or "", saved=saved
        )

    @post("/settings", status_code=303)
    async def settings(self, request: Request[Any, Any, Any], tenant_slug: FromPath[str]) -> Response[Any]:
        tenant_id, partner_id = await _partner(request, tenant_slug)
        values = await checked_form(request)
        address = values.get("payout_email", "")
        context = {
            "base": _base(tenant_slug),
            "sections": SECTIONS,
            "section": "settings",
            "heading": "Settings",
            "payout_email": address,
            "saved": False,
        }
        await _call(
            lambda: portal.update_payout_email(tenant_id, partner_id, address), "partners/settings.html", **context
        )
        return _redirect(f"{_base(tenant_slug)}/settings?saved=1")


async def _link(function: Callable[[], T], base: str) -> T:
    """A mailed link's check: a dead link gets a page that says so and the ways on (a password will not help)."""
    try:
        return await anyio.to_thread.run_sync(function)
    except Invalid as error:
        raise FormRefused(
            error.message, 400, template="partners/notice.html", context={"heading": "Link", "detail": "", "base": base}
        ) from error
