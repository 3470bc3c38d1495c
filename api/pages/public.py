"""Hosted pages and membership login, as browsers see them: ``/s/{tenant_slug}/…`` and custom domains.

Every state-changing form carries a CSRF token (double submit: a cookie and a hidden field that must
match) and must come from our own origin. The session cookie is ``__Host-``-prefixed on https.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import secrets
import time
from typing import Any
from urllib.parse import quote
from uuid import UUID

import anyio.to_thread
from litestar import MediaType, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import FromPath

from api.cookies import secure_cookies, visitor_cookie
from api.loading import load_once
from tenants.cache import Missing
from tenants.errors import DomainError, Invalid, RateLimited
from tenants.identity.cache import identities
from tenants.memberships import service as memberships
from tenants.memberships.sessions import MemberSession, read_session
from tenants.models import Contact, new_id
from tenants.pages.service import safe_next
from tenants.pages.serving import (
    NOT_FOUND,
    PageBundle,
    find_tenant,
    load_bundle,
    load_contact,
    page_result,
    pages,
    tenants_by_handle,
    viewer_of,
)
from tenants.settings import get_settings
from tenants.tracking.origins import client_ip, normalize_origin
from tenants.tracking.visitors import VISITOR_COOKIE, visitor_of_browser

__all__ = ["MEMBERSHIP_HANDLERS", "PAGE_HANDLERS"]

CSRF_COOKIE = "tm_csrf"


def session_cookie_name() -> str:
    """``__Host-`` requires Secure (https); a plain http development server gets a plain name."""
    return "__Host-tm_session" if get_settings().base_url.startswith("https://") else "tm_session"


def _own_origin() -> str:
    origin = normalize_origin(get_settings().base_url)
    assert origin is not None
    return origin


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        body, status_code=status, media_type=MediaType.HTML, headers={"Cache-Control": "no-store", **(headers or {})}
    )


def _redirect(location: str, status: int = 303) -> Response[Any]:
    return Response(b"", status_code=status, headers={"Location": location, "Cache-Control": "no-store"})


def _too_many_attempts(limited: RateLimited) -> Response[str]:
    return _html(f"<h1>{html.escape(limited.message)}</h1>", 429, {"Retry-After": str(limited.retry_after)})


async def _serve(request: Request[Any, Any, Any], tenant_id: UUID | None, page_slug: str) -> Response[Any]:
    """A page view. Warm caches answer an identified visitor without a database read or a thread."""
    bundle: PageBundle | None = None
    if tenant_id is not None:
        cached = pages.get((tenant_id, page_slug))
        if isinstance(cached, Missing):
            bundle = await load_once(("page", tenant_id, page_slug), lambda: load_bundle(tenant_id, page_slug))
        else:
            bundle = cached
    if tenant_id is None or bundle is None:
        return _html(NOT_FOUND, 404)
    browser = visitor_of_browser(
        tenant_id, request.cookies.get(VISITOR_COOKIE), first_hit=(new_id(), int(time.time() * 1000))
    )
    session_cookie = request.cookies.get(session_cookie_name())
    member = await anyio.to_thread.run_sync(read_session, tenant_id, session_cookie) if session_cookie else None
    identity: tuple[Contact, str | None] | None = None
    if member is not None or not browser.is_new:  # a brand-new browser is nobody yet
        contact_id = UUID(member.contact_id) if member else None
        key = (tenant_id, contact_id or browser.visitor_id)
        known = identities.get(key)
        if isinstance(known, tuple):
            identity = known
        else:
            identity = await load_once(
                ("identity", *key),
                lambda: load_contact(tenant_id, visitor_id=browser.visitor_id, contact_id=contact_id),
            )
    result = page_result(
        bundle, viewer_of(bundle, member, identity), path=request.url.path, base_url=get_settings().base_url
    )
    response = _redirect(result.location, result.status) if result.location else _html(result.html or "", result.status)
    if browser.reissued:
        response.set_cookie(visitor_cookie(browser.token))
    return response


@get("/s/{tenant_slug:str}/{page_slug:str}", include_in_schema=False)
async def hosted_page(
    request: Request[Any, Any, Any], tenant_slug: FromPath[str], page_slug: FromPath[str]
) -> Response[Any]:
    return await _serve(request, await _tenant(tenant_slug), page_slug)


@get("/{page_slug:str}", include_in_schema=False)
async def custom_domain_page(request: Request[Any, Any, Any], page_slug: FromPath[str]) -> Response[Any]:
    """A tenant's own domain (CNAME to Trailmark) serves its pages at the root."""
    host = request.headers.get("host") or ""
    handle = f"domain:{host.split(':')[0].lower()}"
    cached = tenants_by_handle.get(handle)
    tenant_id = cached if not isinstance(cached, Missing) else await load_once(handle, lambda: find_tenant(host=host))
    return await _serve(request, tenant_id, page_slug)


PAGE_HANDLERS = [hosted_page, custom_domain_page]


# --- membership: login, registration, logout, passwords ------------------------------------------


def _csrf(request: Request[Any, Any, Any]) -> tuple[str, bool]:
    """The browser's CSRF token, and whether it is new (then it must be set as a cookie)."""
    existing = request.cookies.get(CSRF_COOKIE)
    return (existing, False) if existing and len(existing) >= 32 else (secrets.token_urlsafe(32), True)


def _csrf_cookie(token: str) -> Cookie:
    return Cookie(key=CSRF_COOKIE, value=token, httponly=True, secure=secure_cookies(), samesite="lax", path="/")


async def _member_or_login(
    request: Request[Any, Any, Any], tenant_slug: str, site_id: UUID, here: str
) -> tuple[UUID, MemberSession] | Response[Any]:
    """The logged-in member of this site, or the way to its login page (and back ``here``)."""
    tenant_id = await _tenant(tenant_slug)
    member = None
    if tenant_id is not None:
        member = await anyio.to_thread.run_sync(read_session, tenant_id, request.cookies.get(session_cookie_name()))
    if tenant_id is None or member is None or member.membership_site_id != str(site_id):
        login = f"{_base(tenant_slug, site_id)}/login?next={quote(here, safe='/')}"
        return _redirect(login)
    return tenant_id, member


def _form_page(
    request: Request[Any, Any, Any], title: str, fields: str, action: str, *, error: str = "", status: int = 200
) -> Response[str]:
    token, new = _csrf(request)
    message = f'<p class="tm-error" role="alert">{html.escape(error)}</p>' if error else ""
    body = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1>{message}<form method='post' action='{html.escape(action)}'>"
        f"<input type='hidden' name='csrf' value='{token}'>{fields}"
        f"<p><button type='submit'>{html.escape(title)}</button></p>"
        "</form></body></html>"
    )
    response = _html(body, status)
    if new:
        response.set_cookie(_csrf_cookie(token))
    return response


async def _checked_form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The posted fields, after the CSRF and origin checks (raises 403 otherwise)."""
    origin = request.headers.get("origin")
    if origin and normalize_origin(origin) not in (
        _own_origin(),
        normalize_origin(f"http://{request.headers.get('host', '')}"),
        normalize_origin(f"https://{request.headers.get('host', '')}"),
    ):
        raise _Refused("this form must be sent from its own page")
    values = {k: str(v) for k, v in (await request.form()).items() if isinstance(v, str)}
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    if not cookie or not hmac.compare_digest(cookie, values.get("csrf", "")):
        raise _Refused("the form expired; reload the page and try again")
    return values


class _Refused(Exception):
    pass


async def _posted(request: Request[Any, Any, Any], tenant_slug: str) -> tuple[UUID, dict[str, str]] | Response[Any]:
    """The tenant and the checked fields of a membership form, or the page that refuses it."""
    tenant_id = await _tenant(tenant_slug)
    if tenant_id is None:
        return _html("<h1>Not found.</h1>", 404)
    try:
        return tenant_id, await _checked_form(request)
    except _Refused as refused:
        return _html(f"<h1>{html.escape(str(refused))}</h1>", 403)


def _message(error: DomainError) -> str:
    """One line for a form page: the per-field messages, or the error's own."""
    if isinstance(error, Invalid) and error.errors:
        return "; ".join(f"{field.replace('_', ' ')} {text}" for field, text in error.errors.items())
    return error.message


def _ip(request: Request[Any, Any, Any]) -> str | None:
    return client_ip(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        get_settings().trusted_proxies,
    )


def _base(tenant_slug: str, site_id: UUID) -> str:
    return f"/s/{tenant_slug}/m/{site_id}"


LOGIN_FIELDS = (
    "<p><label>Email <input type='email' name='email' required autocomplete='username'></label></p>"
    "<p><label>Password <input type='password' name='password' required autocomplete='current-password'></label></p>"
)


def _next_field(tenant_slug: str, value: str | None) -> str:
    target = safe_next(tenant_slug, value)
    return f"<input type='hidden' name='next' value='{html.escape(target)}'>" if target else ""


async def _tenant(tenant_slug: str) -> UUID | None:
    handle = f"tenant_slug:{tenant_slug}"
    cached = tenants_by_handle.get(handle)
    if not isinstance(cached, Missing):
        return cached
    return await load_once(handle, lambda: find_tenant(slug=tenant_slug))


def _after_login(tenant_slug: str, site_id: UUID, next_path: str | None, result: memberships.LoginResult) -> str:
    """The page that asked for the login, else the site's landing page, else the member's account page."""
    if target := safe_next(tenant_slug, next_path):
        return target
    if result.landing_page_slug:
        return f"/s/{tenant_slug}/{result.landing_page_slug}"
    return f"{_base(tenant_slug, site_id)}/account"


def _logged_in_response(location: str, result: memberships.LoginResult) -> Response[Any]:
    response = _redirect(location)
    response.set_cookie(
        Cookie(
            key=session_cookie_name(),
            value=result.session.session_id,
            httponly=True,
            secure=secure_cookies(),
            samesite="lax",
            path="/",
        )
    )
    response.set_cookie(visitor_cookie(result.visitor_token))
    return response


@get("/s/{tenant_slug:str}/m/{site_id:uuid}/login", include_in_schema=False)
async def login_form(
    request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
) -> Response[Any]:
    fields = LOGIN_FIELDS + _next_field(tenant_slug, request.query_params.get("next"))
    return _form_page(request, "Log in", fields, f"{_base(tenant_slug, site_id)}/login")


@post("/s/{tenant_slug:str}/m/{site_id:uuid}/login", include_in_schema=False, status_code=303)
async def login(request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]) -> Response[Any]:
    posted = await _posted(request, tenant_slug)
    if isinstance(posted, Response):
        return posted
    tenant_id, values = posted
    action = f"{_base(tenant_slug, site_id)}/login"
    fields = LOGIN_FIELDS + _next_field(tenant_slug, values.get("next"))
    try:
        result = await anyio.to_thread.run_sync(
            lambda: memberships.log_in(
                tenant_id,
                site_id,
                email=values.get("email", ""),
                password=values.get("password", ""),
                ip=_ip(request),
                presented_session=request.cookies.get(session_cookie_name()),
                visitor_tokens=(request.cookies.get(VISITOR_COOKIE),),
            )
        )
    except RateLimited as limited:
        return _too_many_attempts(limited)
    except DomainError as error:
        return _form_page(request, "Log in", fields, action, error=error.message, status=error.status)
    return _logged_in_response(_after_login(tenant_slug, site_id, values.get("next"), result), result)


REGISTER_FIELDS = (
    "<p><label>First name <input type='text' name='first_name' maxlength='200' autocomplete='given-name'></label></p>"
    "<p><label>Email <input type='email' name='email' required autocomplete='email'></label></p>"
)
CHECK_YOUR_EMAIL = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Check your email</title></head><body>"
    "<h1>Check your email</h1><p>We sent a message to the address you gave. Follow the link in it to finish"
    " registering (it is valid for 24 hours).</p></body></html>"
)
"""The one answer to a registration, whoever the address belongs to: it must not tell who is a member."""


@get("/s/{tenant_slug:str}/m/{site_id:uuid}/register", include_in_schema=False)
async def register_form(
    request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
) -> Response[Any]:
    return _register_page(request, tenant_slug, site_id, request.query_params.get("next"))


def _register_page(
    request: Request[Any, Any, Any],
    tenant_slug: str,
    site_id: UUID,
    next_path: str | None,
    *,
    error: str = "",
    status: int = 200,
) -> Response[str]:
    """The register form (again, with ``error`` and ``status``, after a refusal)."""
    fields = REGISTER_FIELDS + _next_field(tenant_slug, next_path)
    action = f"{_base(tenant_slug, site_id)}/register"
    return _form_page(request, "Register", fields, action, error=error, status=status)


@post("/s/{tenant_slug:str}/m/{site_id:uuid}/register", include_in_schema=False, status_code=200)
async def register(
    request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
) -> Response[Any]:
    """Only mails a link to the address (or, to a member, a reminder); nobody is logged in or identified."""
    posted = await _posted(request, tenant_slug)
    if isinstance(posted, Response):
        return posted
    tenant_id, values = posted
    try:
        await anyio.to_thread.run_sync(
            lambda: memberships.request_registration(
                tenant_id,
                site_id,
                email=values.get("email", ""),
                first_name=values.get("first_name") or None,
                next_path=safe_next(tenant_slug, values.get("next")),
                ip=_ip(request),
            )
        )
    except RateLimited as limited:
        return _too_many_attempts(limited)
    except DomainError as error:
        return _register_page(
            request, tenant_slug, site_id, values.get("next"), error=_message(error), status=error.status
        )
    return _html(CHECK_YOUR_EMAIL)


def _confirm_page(
    request: Request[Any, Any, Any],
    tenant_slug: str,
    site_id: UUID,
    email: str,
    token: str,
    *,
    error: str = "",
    status: int = 200,
) -> Response[str]:
    """The emailed link's form: choose the password (again, with ``error`` and ``status``, after a refusal)."""
    # The address as a read-only username, so that password managers store the new password under it.
    fields = (
        f"<p>Choose the password for <strong>{html.escape(email)}</strong>.</p>"
        f"<input type='hidden' name='token' value='{html.escape(token)}'>"
        f"<input type='email' name='username' value='{html.escape(email)}' autocomplete='username' readonly hidden>"
        "<p><label>Password <input type='password' name='password' required minlength='10'"
        " autocomplete='new-password'></label></p>"
    )
    action = f"{_base(tenant_slug, site_id)}/register/confirm"
    return _form_page(request, "Finish registering", fields, action, error=error, status=status)


def _link_refused(tenant_slug: str, site_id: UUID, error: DomainError) -> Response[str]:
    base = html.escape(_base(tenant_slug, site_id))
    return _html(
        "<!doctype html><html><head><meta charset='utf-8'><title>Registration</title></head><body>"
        f"<h1>Registration</h1><p class='tm-error' role='alert'>{html.escape(error.message)}</p>"
        f"<p><a href='{base}/login'>Log in</a> · <a href='{base}/password/reset'>Reset your password</a>"
        f" · <a href='{base}/register'>Register</a></p></body></html>",
        error.status,
    )


@get("/s/{tenant_slug:str}/m/{site_id:uuid}/register/confirm", include_in_schema=False)
async def confirm_registration_form(
    request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
) -> Response[Any]:
    """The emailed link's page: choose the password. Opening it uses nothing up (mail scanners open links)."""
    tenant_id = await _tenant(tenant_slug)
    if tenant_id is None:
        return _html("<h1>Not found.</h1>", 404)
    token = request.query_params.get("token", "")
    try:
        pending = await anyio.to_thread.run_sync(memberships.pending_registration, tenant_id, site_id, token)
    except DomainError as error:
        return _link_refused(tenant_slug, site_id, error)
    return _confirm_page(request, tenant_slug, site_id, pending.email, token)


@post("/s/{tenant_slug:str}/m/{site_id:uuid}/register/confirm", include_in_schema=False, status_code=303)
async def confirm_registration(
    request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
) -> Response[Any]:
    """The address is proved: the member is created with the chosen password and logged in here."""
    posted = await _posted(request, tenant_slug)
    if isinstance(posted, Response):
        return posted
    tenant_id, values = posted
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
            return _link_refused(tenant_slug, site_id, error)
        email = values.get("username", "")
        return _confirm_page(request, tenant_slug, site_id, email, token, error=_message(error), status=error.status)
    except DomainError as error:
        return _link_refused(tenant_slug, site_id, error)
    return _logged_in_response(_after_login(tenant_slug, site_id, result.next_path, result), result)


def _logged_out(location: str) -> Response[Any]:
    response = _redirect(location)
    response.delete_cookie(session_cookie_name(), path="/")
    return response


@post("/s/{tenant_slug:str}/m/{site_id:uuid}/logout", include_in_schema=False, status_code=303)
async def logout(request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]) -> Response[Any]:
    posted = await _posted(request, tenant_slug)
    if isinstance(posted, Response):
        return posted
    tenant_id, _ = posted
    await anyio.to_thread.run_sync(memberships.log_out, tenant_id, request.cookies.get(session_cookie_name()))
    return _logged_out(f"{_base(tenant_slug, site_id)}/login")


@post("/s/{tenant_slug:str}/m/{site_id:uuid}/logout-everywhere", include_in_schema=False, status_code=303)
async def logout_everywhere(
    request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
) -> Response[Any]:
    posted = await _posted(request, tenant_slug)
    if isinstance(posted, Response):
        return posted
    tenant_id, _ = posted
    with contextlib.suppress(DomainError):  # not logged in: nothing to end
        await anyio.to_thread.run_sync(
            memberships.log_out_everywhere, tenant_id, request.cookies.get(session_cookie_name())
        )
    return _logged_out(f"{_base(tenant_slug, site_id)}/login")


PASSWORD_CHANGE_FIELDS = (
    "<p><label>Current password <input type='password' name='current_password' required"  # noqa: S105 - markup
    " autocomplete='current-password'></label></p>"
    "<p><label>New password <input type='password' name='new_password' required minlength='10'"
    " autocomplete='new-password'></label></p>"
)


@get("/s/{tenant_slug:str}/m/{site_id:uuid}/password", include_in_schema=False)
async def password_form(
    request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
) -> Response[Any]:
    found = await _member_or_login(request, tenant_slug, site_id, f"{_base(tenant_slug, site_id)}/password")
    if isinstance(found, Response):
        return found
    return _form_page(request, "Change password", PASSWORD_CHANGE_FIELDS, f"{_base(tenant_slug, site_id)}/password")


@post("/s/{tenant_slug:str}/m/{site_id:uuid}/password", include_in_schema=False, status_code=303)
async def change_password(
    request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
) -> Response[Any]:
    posted = await _posted(request, tenant_slug)
    if isinstance(posted, Response):
        return posted
    tenant_id, values = posted
    try:
        result = await anyio.to_thread.run_sync(
            lambda: memberships.change_password(
                tenant_id,
                request.cookies.get(session_cookie_name()),
                current_password=values.get("current_password", ""),
                new_password=values.get("new_password", ""),
            )
        )
    except DomainError as error:
        detail = _message(error)
        return _form_page(
            request,
            "Change password",
            PASSWORD_CHANGE_FIELDS,
            f"{_base(tenant_slug, site_id)}/password",
            error=detail,
            status=error.status,
        )
    return _logged_in_response(_after_login(tenant_slug, site_id, None, result), result)


RESET_FIELDS = "<p><label>Email <input type='email' name='email' required autocomplete='username'></label></p>"


@get("/s/{tenant_slug:str}/m/{site_id:uuid}/password/reset", include_in_schema=False)
async def reset_form(
    request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
) -> Response[Any]:
    return _form_page(request, "Reset password", RESET_FIELDS, f"{_base(tenant_slug, site_id)}/password/reset")


@post("/s/{tenant_slug:str}/m/{site_id:uuid}/password/reset", include_in_schema=False, status_code=200)
async def request_reset(
    request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
) -> Response[Any]:
    posted = await _posted(request, tenant_slug)
    if isinstance(posted, Response):
        return posted
    tenant_id, values = posted
    try:
        await anyio.to_thread.run_sync(
            lambda: memberships.request_password_reset(tenant_id, site_id, values.get("email", ""), _ip(request))
        )
    except RateLimited as limited:
        return _too_many_attempts(limited)
    return _html(
        "<!doctype html><title>Check your email</title>"
        "<h1>If this email belongs to a member, a reset link is on its way.</h1>"
    )


SET_FIELDS = (
    "<p><label>New password <input type='password' name='new_password' required minlength='10'"
    " autocomplete='new-password'></label></p>"
)


@get("/s/{tenant_slug:str}/m/{site_id:uuid}/password/set", include_in_schema=False)
async def set_password_form(
    request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
) -> Response[Any]:
    token = html.escape(request.query_params.get("token", ""))
    return _form_page(
        request,
        "Set password",
        SET_FIELDS + f"<input type='hidden' name='token' value='{token}'>",
        f"{_base(tenant_slug, site_id)}/password/set",
    )


@post("/s/{tenant_slug:str}/m/{site_id:uuid}/password/set", include_in_schema=False, status_code=303)
async def set_password(
    request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
) -> Response[Any]:
    posted = await _posted(request, tenant_slug)
    if isinstance(posted, Response):
        return posted
    tenant_id, values = posted
    try:
        await anyio.to_thread.run_sync(
            lambda: memberships.reset_password(
                tenant_id, site_id, values.get("token", ""), values.get("new_password", "")
            )
        )
    except DomainError as error:
        detail = _message(error)
        token_field = f"<input type='hidden' name='token' value='{html.escape(values.get('token', ''))}'>"
        return _form_page(
            request,
            "Set password",
            SET_FIELDS + token_field,
            f"{_base(tenant_slug, site_id)}/password/set",
            error=detail,
            status=error.status,
        )
    return _logged_out(f"{_base(tenant_slug, site_id)}/login")


@get("/s/{tenant_slug:str}/m/{site_id:uuid}/account", include_in_schema=False)
async def account(
    request: Request[Any, Any, Any], tenant_slug: FromPath[str], site_id: FromPath[UUID]
) -> Response[Any]:
    """The member's own page: who is logged in, log out (here or everywhere), change the password."""
    base = _base(tenant_slug, site_id)
    found = await _member_or_login(request, tenant_slug, site_id, f"{base}/account")
    if isinstance(found, Response):
        return found
    tenant_id, member = found
    contact = await anyio.to_thread.run_sync(
        lambda: load_contact(tenant_id, visitor_id=None, contact_id=UUID(member.contact_id))
    )
    name = html.escape((contact[0].first_name or contact[0].email) if contact else "")
    token, new = _csrf(request)
    forms = "".join(
        f"<form method='post' action='{base}/{action}'><input type='hidden' name='csrf' value='{token}'>"
        f"<button type='submit'>{label}</button></form>"
        for action, label in (("logout", "Log out"), ("logout-everywhere", "Log out everywhere"))
    )
    body = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Your account</title></head><body>"
        f"<h1>Logged in as {name}</h1><p><a href='{base}/password'>Change password</a></p>{forms}</body></html>"
    )
    response = _html(body)
    if new:
        response.set_cookie(_csrf_cookie(token))
    return response


MEMBERSHIP_HANDLERS = [
    account,
    login_form,
    login,
    register_form,
    register,
    confirm_registration_form,
    confirm_registration,
    logout,
    logout_everywhere,
    password_form,
    change_password,
    reset_form,
    request_reset,
    set_password_form,
    set_password,
]
