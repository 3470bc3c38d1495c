"""The template engine (Jinja2 through Litestar) and :func:`page`, the one way a handler answers with HTML.

One Jinja2 environment serves Litestar's template responses and :func:`render` alike, so a fragment (a form's
embed code) or a hot path (a cached hosted page) uses the same templates, filters and escaping as every page.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Request, Response
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from markupsafe import Markup

from api.web.csrf import CSRF_FIELD, FormRefused, csrf_cookie, csrf_token
from tenants.forms.service import HONEYPOT
from tenants.purchases.currencies import format_money

__all__ = ["ENVIRONMENT", "STATIC_ROUTER", "page", "refused", "render", "template_config"]

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

STATIC_ROUTER = create_static_files_router(path="/app/static", directories=[STATIC], name="static")
"""First-party CSS and scripts; no CDN."""


def _environment() -> Environment:
    # StrictUndefined: a misspelt variable is an error in tests, not a silently empty page.
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals["form_honeypot"] = HONEYPOT
    environment.filters["money"] = format_money
    return environment


ENVIRONMENT = _environment()
"""The one Jinja2 environment of the app (autoescaping on)."""


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    engine = JinjaTemplateEngine.from_environment(ENVIRONMENT)
    engine.register_template_callable("csrf_field", _csrf_field)
    return TemplateConfig(instance=engine)


def render(template: str, **context: Any) -> str:
    """``template`` rendered to a string: for fragments and for pages that carry no form of ours (no CSRF
    token), such as a tenant's hosted page."""
    return ENVIRONMENT.get_template(template).render(context)


def _csrf_field(context: Mapping[str, Any], /) -> Markup:
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, context["csrf_token"])


def page(
    request: Request[Any, Any, Any],
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Template:
    """Render ``template`` with ``context``; every page carries the browser's CSRF token (set as a cookie when new)
    and is never cached, since pages show who is logged in."""
    token, new = csrf_token(request)
    return Template(
        template_name=template,
        context={**context, "csrf_token": token},
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
        cookies=[csrf_cookie(token)] if new else [],
    )


def refused(request: Request[Any, Any, Any], refusal: FormRefused) -> Response[Any]:
    """The one answer to a refused browser form: a page that says why, with the refusal's status; the form's own
    page again (with the message) when the refusal names one."""
    headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else None
    return page(
        request, refusal.template, status=refusal.status, headers=headers, **refusal.context, message=refusal.message
    )
