"""A membership site's pages for its members: login, registration and its confirmation, logout (here or
everywhere), password change, reset and set, and the account page, under ``/s/{tenant_slug}/m/{site_id}``.

Every page is a template of ``memberships/`` rendered with :func:`api.web.page`; every form carries the one CSRF
token (:func:`api.web.checked_form`). A refusal is raised, never returned: a domain error or a
:class:`~api.web.FormRefused` becomes a page through :func:`api.web.templates.refused`, the form's own page again
(with the message) when the person can correct it there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote
from uuid import UUID

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Stream, Template

from api.cookies import member_session_cookie, session_cookie_name, visitor_cookie
from api.pages.serving import tenant_of_slug
from api.privacy.controller import person_export_stream
from api.web import FormRefused, checked_form, page
from api.web.templates import refused
from tenants.errors import DomainError, Invalid, NotFound, RateLimited
from tenants.memberships import service as memberships
from tenants.memberships.sessions import MemberSession, read_session
from tenants.pages.service import safe_next
from tenants.pages.serving import load_contact
from tenants.privacy import erase
from tenants.settings import get_settings
from tenants.tracking.origins import client_ip
from tenants.tracking.visitors import VISITOR_COOKIE

__all__ = ["MembershipController"]

T = TypeVar("T")

CHECK_YOUR_EMAIL = (
    "We sent a message to the address you gave. Follow the link in it to finish registering (it is valid for 24 hours)."
)
"""The one answer to a registration, whoever the address belongs to: it must not tell who is a member."""
RESET_ON_ITS_WAY = "If this email belongs to a member, a reset link is on its way."


class MemberLoginRequired(Exception):
    """The page needs this site's member: the browser goes to the login page, and comes back after it."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def _login_required(_: Request[Any, Any, Any], exc: MemberLoginRequired) -> Response[Any]:
    return Response(b"", status_code=303, headers={"Location": exc.location, "Cache-Control": "no-store"})


def _message(error: DomainError) -> str:
    """One line for a form page: the per-field messages, or the error's own."""
    if isinstance(error, Invalid) and error.errors:
        return "; ".join(f"{field.replace('_', ' ')} {text}" for field, text in error.errors.items())
    return error.message


def _refusal(error: DomainError, template: str = "refused.html", **context: Any) -> FormRefused:
    retry_after = error.retry_after if isinstance(error, RateLimited) else None
    return FormRefused(_message(error), error.status, retry_after=retry_after, template=template, context=context)


async def _link_refused(error: DomainError, tenant_slug: str, site_id: UUID) -> FormRefused:
    """The emailed link itself is refused: its own words, and the ways on (choosing a password will not help);
    "Register" among them only where anyone may register, as on the login page."""
    try:
        registration_open = await _registration_open(tenant_slug, site_id)
    except NotFound:  # no such site: no way on to offer
        registration_open = False
    context = {"base": _base(tenant_slug, site_id), "registration_open": registration_open}
    return FormRefused(error.message, error.status, template="memberships/link_refused.html", context=context)


def _domain_error(request: Request[Any, Any, Any], error: DomainError) -> Response[Any]:
    """A domain error nobody can correct on the form (a throttle, an unknown site or tenant): a page saying why."""
    return refused(request, _refusal(error))


async def _call(function: Callable[[], T], form: str | None = None, **context: Any) -> T:
    """``function`` in a worker thread; a refusal of what the person typed shows ``form`` again with the message
    (a throttle is never shown as a form: trying again at once would not help)."""
    try:
        return await anyio.to_thread.run_sync(function)
    except DomainError as error:
        if form is None or isinstance(error, RateLimited):
            raise
        raise _refusal(error, form, **context) from error


def _ip(request: Request[Any, Any, Any]) -> str | None:
    return client_ip(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        get_settings().trusted_proxies,
    )


def _base(tenant_slug: str, site_id: UUID) -> str:
    return f"/s/{tenant_slug}/m/{site_id}"


async def _tenant(tenant_slug: str) -> UUID:
    tenant_id = await tenant_of_slug(tenant_slug)
    if tenant_id is None:
        raise NotFound("this page does not exist")
    return tenant_id


async def _registration_open(tenant_slug: str, site_id: UUID) -> bool:
    """Whether the site's pages offer "Register" (an invite-only site's members are added by the tenant)."""
    return await anyio.to_thread.run_sync(memberships.registration_is_open, await _tenant(tenant_slug), site_id)


async def _posted(request: Request[Any, Any, Any], tenant_slug: str) -> tuple[UUID, dict[str, str]]:
    """The tenant and the fields of a membership form, once its CSRF token and origin are checked."""
    return await _tenant(tenant_slug), await checked_form(request)


async def _member(request: Request[Any, Any, Any], tenant_slug: str, site_id: UUID, here: str) -> MemberSession:
    """The logged-in member of this site; else the browser is sent to its login page (and back ``here``)."""
    tenant_id = await tenant_of_slug(tenant_slug)
    member = None
    if tenant_id is not None:
        member = await anyio.to_thread.run_sync(read_session, tenant_id, request.cookies.get(session_cookie_name()))
    if member is None or member.membership_site_id != str(site_id):
        raise MemberLoginRequired(f"{_base(tenant_slug, site_id)}/login?next={quote(here, safe='/')}")
    return member


def _form(
    request: Request[Any, Any, Any],
    template: str,
    heading: str,
    action: str,
    *,
    next_path: str | None = None,
    **context: Any,
) -> Template:
    return page(request, template, heading=heading, action=action, next_path=next_path, **context)


def _redirect(location: str) -> Response[Any]:
    return Response(b"", status_code=303, headers={"Location": location, "Cache-Control": "no-store"})


def _after_login(tenant_slug: str, site_id: UUID, next_path: str | None, result: memberships.LoginResult) -> str:
    """The page that asked for the login, else the site's landing page, else the member's account page."""
    if target := safe_next(tenant_slug, next_path):
        return target
    if result.landing_page_slug:
        return f"/s/{tenant_slug}/{result.landing_page_slug}"
    return f"{_base(tenant_slug, site_id)}/account"


def _logged_in(location: str, result: memberships.LoginResult) -> Response[Any]:
    response = _redirect(location)
    response.set_cookie(member_session_cookie(result.session.session_id))
    response.set_cookie(visitor_cookie(result.visitor_token))
    return response


def _logged_out(location: str) -> Response[Any]:
    response = _redirect(location)
    response.delete_cookie(session_cookie_name(), path="/")
    return response


class MembershipController(Controller):
    """The member-facing pages of one membership site."""

    path = "/s/{tenant_slug:str}/m/{site_id:uuid}"
    include_in_schema = False
    exception_handlers = {
        DomainError: _domain_error,
        FormRefused: refused,
        MemberLoginRequired: _login_required,
    }

    @get("/login")
    async def login_form(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Template:
        base = _base(tenant_slug, site_id)
        next_path = safe_next(tenant_slug, request.query_params.get("next"))
        registration_open = await _registration_open(tenant_slug, site_id)
        return _form(
            request,
            "memberships/login.html",
            "Log in",
            f"{base}/login",
            next_path=next_path,
            base=base,
            registration_open=registration_open,
        )

    @post("/login", status_code=303)
    async def login(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Response[Any]:
        tenant_id, values = await _posted(request, tenant_slug)
        base = _base(tenant_slug, site_id)
        next_path = safe_next(tenant_slug, values.get("next"))
        result = await _call(
            lambda: memberships.log_in(
                tenant_id,
                site_id,
                email=values.get("email", ""),
                password=values.get("password", ""),
                ip=_ip(request),
                presented_session=request.cookies.get(session_cookie_name()),
                visitor_tokens=(request.cookies.get(VISITOR_COOKIE),),
            ),
            "memberships/login.html",
            heading="Log in",
            action=f"{base}/login",
            next_path=next_path,
            base=base,
            registration_open=await _registration_open(tenant_slug, site_id),
        )
        return _logged_in(_after_login(tenant_slug, site_id, next_path, result), result)

    @get("/register")
    async def register_form(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Template:
        base = _base(tenant_slug, site_id)
        next_path = safe_next(tenant_slug, request.query_params.get("next"))
        return _form(
            request, "memberships/register.html", "Register", f"{base}/register", next_path=next_path, base=base
        )

    @post("/register", status_code=200)
    async def register(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Template:
        """Only mails a link to the address (or, to a member, a reminder); nobody is logged in or identified."""
        tenant_id, values = await _posted(request, tenant_slug)
        base = _base(tenant_slug, site_id)
        next_path = safe_next(tenant_slug, values.get("next"))
        await _call(
            lambda: memberships.request_registration(
                tenant_id,
                site_id,
                email=values.get("email", ""),
                first_name=values.get("first_name") or None,
                next_path=next_path,
                ip=_ip(request),
            ),
            "memberships/register.html",
            heading="Register",
            action=f"{base}/register",
            next_path=next_path,
            base=base,
        )
        return page(request, "memberships/check_email.html", detail=CHECK_YOUR_EMAIL)

    @get("/register/confirm")
    async def confirm_registration_form(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Template:
        """The emailed link's page: choose the password. Opening it uses nothing up (mail scanners open links)."""
        tenant_id = await _tenant(tenant_slug)
        base = _base(tenant_slug, site_id)
        token = request.query_params.get("token", "")
        try:
            pending = await anyio.to_thread.run_sync(memberships.pending_registration, tenant_id, site_id, token)
        except DomainError as error:
            raise await _link_refused(error, tenant_slug, site_id) from error
        return _form(
            request,
            "memberships/confirm.html",
            "Finish registering",
            f"{base}/register/confirm",
            email=pending.email,
            token=token,
        )

    @post("/register/confirm", status_code=303)
    async def confirm_registration(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Response[Any]:
        """The address is proved: the member is created with the chosen password and logged in here."""
        tenant_id, values = await _posted(request, tenant_slug)
        base = _base(tenant_slug, site_id)
        token = values.get("token", "")
        try:
            result = await anyio.to_thread.run_sync(
                lambda: memberships.complete_registration(
                    tenant_id,
                    site_id,
                    token=token,
                    password=values.get("password", ""),
                    presented_session=request.cookies.get(session_cookie_name()),
                    visitor_tokens=(request.cookies.get(VISITOR_COOKIE),),
                )
            )
        except Invalid as error:
            if "token" in error.errors:  # the link itself is refused: choosing another password will not help
                raise await _link_refused(error, tenant_slug, site_id) from error
            raise _refusal(
                error,
                "memberships/confirm.html",
                heading="Finish registering",
                action=f"{base}/register/confirm",
                next_path=None,
                email=values.get("username", ""),
                token=token,
            ) from error
        except DomainError as error:
            raise await _link_refused(error, tenant_slug, site_id) from error
        return _logged_in(_after_login(tenant_slug, site_id, result.next_path, result), result)

    @post("/logout", status_code=303)
    async def logout(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Response[Any]:
        tenant_id, _ = await _posted(request, tenant_slug)
        await anyio.to_thread.run_sync(memberships.log_out, tenant_id, request.cookies.get(session_cookie_name()))
        return _logged_out(f"{_base(tenant_slug, site_id)}/login")

    @post("/logout-everywhere", status_code=303)
    async def logout_everywhere(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Response[Any]:
        tenant_id, _ = await _posted(request, tenant_slug)
        with contextlib.suppress(DomainError):  # not logged in: nothing to end
            await anyio.to_thread.run_sync(
                memberships.log_out_everywhere, tenant_id, request.cookies.get(session_cookie_name())
            )
        return _logged_out(f"{_base(tenant_slug, site_id)}/login")

    @get("/password")
    async def password_form(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Template:
        base = _base(tenant_slug, site_id)
        await _member(request, tenant_slug, site_id, f"{base}/password")
        return _form(request, "memberships/password_change.html", "Change password", f"{base}/password", base=base)

    @post("/password", status_code=303)
    async def change_password(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Response[Any]:
        tenant_id, values = await _posted(request, tenant_slug)
        base = _base(tenant_slug, site_id)
        result = await _call(
            lambda: memberships.change_password(
                tenant_id,
                request.cookies.get(session_cookie_name()),
                current_password=values.get("current_password", ""),
                new_password=values.get("new_password", ""),
            ),
            "memberships/password_change.html",
            heading="Change password",
            action=f"{base}/password",
            next_path=None,
            base=base,
        )
        return _logged_in(_after_login(tenant_slug, site_id, None, result), result)

    @get("/password/reset")
    async def reset_form(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Template:
        base = _base(tenant_slug, site_id)
        return _form(request, "memberships/password_reset.html", "Reset password", f"{base}/password/reset", base=base)

    @post("/password/reset", status_code=200)
    async def request_reset(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Template:
        tenant_id, values = await _posted(request, tenant_slug)
        await _call(
            lambda: memberships.request_password_reset(tenant_id, site_id, values.get("email", ""), _ip(request))
        )
        return page(request, "memberships/check_email.html", detail=RESET_ON_ITS_WAY)

    @get("/password/set")
    async def set_password_form(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Template:
        action = f"{_base(tenant_slug, site_id)}/password/set"
        token = request.query_params.get("token", "")
        return _form(request, "memberships/password_set.html", "Set password", action, token=token)

    @post("/password/set", status_code=303)
    async def set_password(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Response[Any]:
        tenant_id, values = await _posted(request, tenant_slug)
        base = _base(tenant_slug, site_id)
        token = values.get("token", "")
        await _call(
            lambda: memberships.reset_password(tenant_id, site_id, token, values.get("new_password", "")),
            "memberships/password_set.html",
            heading="Set password",
            action=f"{base}/password/set",
            next_path=None,
            token=token,
        )
        return _logged_out(f"{base}/login")

    @get("/account")
    async def account(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Template:
        """The member's own page: who is logged in, log out (here or everywhere), change the password."""
        base = _base(tenant_slug, site_id)
        member = await _member(request, tenant_slug, site_id, f"{base}/account")
        tenant_id = await _tenant(tenant_slug)
        contact = await anyio.to_thread.run_sync(
            lambda: load_contact(tenant_id, visitor_id=None, contact_id=UUID(member.contact_id))
        )
        name = (contact[0].first_name or contact[0].email) if contact else ""
        asked = await anyio.to_thread.run_sync(erase.member_open_erasure, tenant_id, UUID(member.contact_id))
        return page(request, "memberships/account.html", base=base, name=name, erasure=asked)

    @get("/account/export")
    async def export_my_data(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Stream:
        """Everything the business holds about the logged-in member, as a JSON download (GDPR art. 15 and 20)."""
        base = _base(tenant_slug, site_id)
        member = await _member(request, tenant_slug, site_id, f"{base}/account")
        tenant_id = await _tenant(tenant_slug)
        contact_id = UUID(member.contact_id)
        await anyio.to_thread.run_sync(erase.member_person, tenant_id, contact_id)  # a 404 page, not a cut stream
        return person_export_stream(tenant_id, contact_id, "my-data.json")

    @post("/account/erase", status_code=303)
    async def ask_erasure(
        self, request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
    ) -> Response[Any]:
        """The member asks to be erased; the business confirms it (and may have to keep some records)."""
        base = _base(tenant_slug, site_id)
        tenant_id, _ = await _posted(request, tenant_slug)
        member = await _member(request, tenant_slug, site_id, f"{base}/account")
        await _call(lambda: erase.member_asks_erasure(tenant_id, UUID(member.member_id)))
        return _redirect(f"{base}/account")
