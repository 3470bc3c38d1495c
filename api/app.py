"""``create_app()``: the Litestar application."""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from api.accounts.controller import AccountsController, SignupController
from api.auth import provide_caller
from api.health.controller import health, ready
from api.problems import EXCEPTION_HANDLERS
from tenants.logs import configure_logging
from workers.app import install_outbox_publisher

__all__ = ["create_app"]

MAX_API_BODY = 1024 * 1024


def create_app() -> Litestar:
    configure_logging()
    install_outbox_publisher()
    return Litestar(
        route_handlers=[health, ready, SignupController, AccountsController],
        dependencies={"caller": provide_caller},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=MAX_API_BODY,
        openapi_config=OpenAPIConfig(
            title="Trailmark",
            version="0.1.0",
            path="/api/schema",
            components=Components(
                security_schemes={
                    "apiKey": SecurityScheme(
                        type="http", scheme="bearer", description="Authorization: Bearer tm_…"
                    )
                }
            ),
        ),
    )
