"""The tenant dashboard at ``/app``: server-rendered screens over the same services as the REST API.

Each screen is a controller in its own module, guarded by the role it needs (``requires``); the router adds the
CSRF check to every state-changing request and renders errors as pages.
"""

from litestar import Router

from api.dashboard.attribution import AttributionController
from api.dashboard.auth import csrf_guard, provide_staff
from api.dashboard.commissions import CommissionsController, PayoutsController
from api.dashboard.contacts import ContactsController
from api.dashboard.forms import FormsController
from api.dashboard.integrations import IntegrationsController
from api.dashboard.links import LinksController
from api.dashboard.login import LoginController
from api.dashboard.memberships import MembershipsController
from api.dashboard.overview import OverviewController
from api.dashboard.pages import PagesController
from api.dashboard.partners import PartnerProgramsController, PartnersController
from api.dashboard.privacy import PrivacyController
from api.dashboard.purchases import PurchasesController, StripeController
from api.dashboard.rendering import DASHBOARD_EXCEPTION_HANDLERS
from api.dashboard.sites import SitesController
from api.dashboard.staff import AccountController, ApiKeysController, AuditController, StaffController
from api.dashboard.visitors import VisitorsController, VisitsController

__all__ = ["dashboard_router"]


def dashboard_router() -> Router:
    return Router(
        path="/",
        route_handlers=[
            LoginController,
            OverviewController,
            AccountController,
            StaffController,
            ApiKeysController,
            AuditController,
            SitesController,
            FormsController,
            LinksController,
            PagesController,
            MembershipsController,
            ContactsController,
            VisitorsController,
            VisitsController,
            AttributionController,
            PurchasesController,
            PartnersController,
            CommissionsController,
            PayoutsController,
            PartnerProgramsController,
            StripeController,
            PrivacyController,
            IntegrationsController,
        ],
        guards=[csrf_guard],
        dependencies={"staff": provide_staff},
        exception_handlers=DASHBOARD_EXCEPTION_HANDLERS,
        include_in_schema=False,
    )
