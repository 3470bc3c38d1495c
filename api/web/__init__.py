"""Everything a browser is served as HTML: one template engine, one CSRF mechanism, one way to refuse a form.

Templates live in ``api/web/templates`` (Jinja2, autoescaping on; tenant-written text is always data passed
into a template, never a template itself). First-party CSS and scripts are in ``api/web/static``, served at
``/app/static``; every page works without them.
"""

from api.web.csrf import CSRF_COOKIE, FormRefused, checked_form, csrf_token
from api.web.templates import STATIC_ROUTER, page, template_config

__all__ = ["CSRF_COOKIE", "STATIC_ROUTER", "FormRefused", "checked_form", "csrf_token", "page", "template_config"]
