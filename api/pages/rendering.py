"""A hosted page's HTML: a :class:`~tenants.pages.service.PageView` through the ``pages/page.html`` template.

The view's HTML parts (sanitised block HTML, escaped link text and title, merge fields filled by escaped values)
are marked safe here and nowhere else, so a template never compiles or re-escapes tenant text. The compiled
template is kept, since a warm page view is on every visitor's path.
"""

from __future__ import annotations

import time
from functools import cache
from uuid import UUID

from jinja2 import Template
from markupsafe import Markup

from api.web.templates import ENVIRONMENT, render
from tenants.cache import TTLCache
from tenants.models import Form
from tenants.pages.service import PageView

__all__ = ["embed_code", "render_hosted_page"]


_form_bodies: TTLCache[tuple[UUID, UUID], tuple[Form, str, Markup]] = TTLCache(60.0)
"""A form's rendered body (everything but its shown-at stamp) for the Form object of the cached page bundle: a
bundle loaded anew brings new objects, so a changed form is rendered again."""


@cache
def _page_template() -> Template:
    return ENVIRONMENT.get_template("pages/page.html")


def _form_body(form: Form, base_url: str) -> Markup:
    cached = _form_bodies.get((form.tenant_id, form.id))
    if isinstance(cached, tuple) and cached[0] is form and cached[1] == base_url:
        return cached[2]
    body = Markup(render("forms/body.html", form=form, base_url=base_url))  # noqa: S704 - our template's output
    return _form_bodies.put((form.tenant_id, form.id), (form, base_url, body))[2]


def embed_code(form: Form, base_url: str) -> str:
    """The HTML a tenant pastes into its own site to show ``form`` (the REST API's and the dashboard's)."""
    return render("forms/embed.html", form=form, base_url=base_url)


def render_hosted_page(view: PageView, *, base_url: str, tracker_site_key: str | None) -> str:
    """The page as its viewer sees it; its forms carry the time they were shown (the fill-time check)."""
    # (id, kind, html, url) per block; the HTML parts are safe by construction (see the module's docstring).
    blocks = [
        (block.id, block.kind, _form_body(block.form, base_url) if block.form else Markup(block.html), block.url)  # noqa: S704
        for block in view.blocks
    ]
    return _page_template().render(
        title=Markup(view.title_html),  # noqa: S704 - escaped, merge fields escaped (tenants.pages.service)
        meta=view.meta,
        level=view.level,
        blocks=blocks,
        shown_at_ms=int(time.time() * 1000),
        tracker_src=f"{base_url}/t/{tracker_site_key}.js" if tracker_site_key else None,
    )
