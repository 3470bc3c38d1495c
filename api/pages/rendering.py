"""A hosted page's HTML: a :class:`~tenants.pages.service.PageView` through the ``pages/page.html`` template.

The view's HTML parts (sanitised block HTML, escaped link text and title, merge fields filled by escaped values)
are marked safe here and nowhere else, so a template never compiles or re-escapes tenant text. The compiled
template is kept, since a warm page view is on every visitor's path.
"""

from __future__ import annotations

import dataclasses
import time
from functools import cache

from jinja2 import Template
from markupsafe import Markup

from api.web.templates import ENVIRONMENT
from tenants.pages.service import PageView

__all__ = ["render_hosted_page"]


@cache
def _page_template() -> Template:
    return ENVIRONMENT.get_template("pages/page.html")


def render_hosted_page(view: PageView, *, base_url: str, tracker_site_key: str | None) -> str:
    """The page as its viewer sees it; its forms carry the time they were shown (the fill-time check)."""
    return _page_template().render(
        title=Markup(view.title_html),  # noqa: S704 - escaped, merge fields escaped (tenants.pages.service)
        meta=view.meta,
        level=view.level,
        blocks=[dataclasses.replace(block, html=Markup(block.html)) for block in view.blocks],  # noqa: S704 - nh3
        base_url=base_url,
        shown_at_ms=int(time.time() * 1000),
        tracker_src=f"{base_url}/t/{tracker_site_key}.js" if tracker_site_key else None,
    )
