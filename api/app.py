"""``create_app()``: the Litestar application."""

from __future__ import annotations

from litestar import Litestar
from litestar.config.compression import CompressionConfig

from api.accounts.controller import AccountsController, SignupController
from api.auth import provide_caller
from api.contacts.controller import ContactFieldsController, ContactsController, resolve_visitor
from api.conversions.controller import ConversionsController, IntegrationsController
from api.dashboard import dashboard_router
from api.forms.controller import FormsController, hosted_form, submit_form
from api.health.controller import health, ready
from api.links.controller import LinksController, exchange, follow_link, whoami
from api.memberships.controller import MembershipController
from api.metrics.controller import metrics
from api.openapi import StrictStructSchemaPlugin, docs_assets, openapi_config
from api.pages.controller import MembershipSitesController, PagesController
from api.pages.serving import PAGE_HANDLERS
from api.partners.controller import PartnerCodesController, PartnerProgramsController, PartnersController
from api.partners.payouts import CommissionsController, PayoutsController
from api.partners.portal import PartnerPortalController
from api.privacy.controller import PrivacyController
from api.problems import EXCEPTION_HANDLERS
from api.purchases.controller import PurchasesController, StripeIntegrationController, stripe_webhook
from api.reports.controller import ReportsController
from api.requests import StrictJSONRequest
from api.text import RefuseUnstorableText
from api.tracking.collect import SKIP_COMPRESSION, collect, tracker_script
from api.tracking.consent import set_consent
from api.tracking.controller import SitesController, VisitorsController, VisitsController
from api.web import STATIC_ROUTER, FormRefused, template_config
from api.web.templates import refused
from tenants.heap import freeze_startup_heap
from tenants.logs import configure_logging
from tenants.metrics import forget_process, set_process_role
from tenants.redis_store import async_redis_client
from tenants.settings import get_settings
from tenants.tracking.buffer import IngestProducer
from workers.app import install_outbox_publisher

__all__ = ["create_app"]

MAX_API_BODY = 1024 * 1024


def create_app() -> Litestar:
    configure_logging()
    install_outbox_publisher()
    set_process_role("api")
    return Litestar(
        route_handlers=[
            health,
            ready,
            metrics,
            SignupController,
            AccountsController,
            SitesController,
            VisitorsController,
            VisitsController,
            ContactFieldsController,
            ContactsController,
            PrivacyController,
            resolve_visitor,
            FormsController,
            LinksController,
            hosted_form,
            submit_form,
            follow_link,
            exchange,
            whoami,
            MembershipSitesController,
            PagesController,
            ReportsController,
            PurchasesController,
            StripeIntegrationController,
            IntegrationsController,
            ConversionsController,
            stripe_webhook,
            PartnerProgramsController,
            PartnersController,
            PartnerCodesController,
            CommissionsController,
            PayoutsController,
            MembershipController,
            PartnerPortalController,
            *PAGE_HANDLERS,
            tracker_script,
            set_consent,
            collect,
            docs_assets(),
            dashboard_router(),
            STATIC_ROUTER,
        ],
        middleware=[RefuseUnstorableText()],  # text PostgreSQL cannot store never reaches a handler
        on_startup=[_start_serving],
        on_shutdown=[_stop_serving],
        compression_config=CompressionConfig(backend="gzip", minimum_size=1024, exclude_opt_key=SKIP_COMPRESSION),
        dependencies={"caller": provide_caller},
        exception_handlers={**EXCEPTION_HANDLERS, FormRefused: refused},
        template_config=template_config(),
        request_max_body_size=MAX_API_BODY,
        logging_config=None,  # configure_logging() above: one format (text or JSON) for every process
        plugins=[StrictStructSchemaPlugin()],
        request_class=StrictJSONRequest,
        openapi_config=openapi_config(),
    )


async def _start_serving(app: Litestar) -> None:
    settings = get_settings()
    assert settings.redis_url is not None and settings.ingest_redis is not None
    # Collect's two Redis clients: the consent mirror on the main one, the ingest shards on theirs (one if the same).
    app.state.redis = async_redis_client(settings.redis_url)
    ingest = (
        app.state.redis if settings.ingest_redis == settings.redis_url else async_redis_client(settings.ingest_redis)
    )
    app.state.ingest = IngestProducer(ingest, settings.ingest_max_backlog, settings.ingest_shards)
    freeze_startup_heap()  # last: everything the process needs to serve is allocated


async def _stop_serving(app: Litestar) -> None:
    if app.state.ingest.client is not app.state.redis:
        await app.state.ingest.aclose()
    await app.state.redis.aclose()
    forget_process()  # its pool gauges leave the sums; its counters stay
