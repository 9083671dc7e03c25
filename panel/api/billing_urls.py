"""URLs of the billing API, included at the root by panel.urls; also the urlconf the
OpenAPI schema is generated from, so that it describes the billing API alone."""
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from . import billing as api

# The schema and its docs page are public (they describe the API, they hold no data); the
# docs page's JavaScript comes from drf-spectacular-sidecar, served by the app (no CDN).
_public = {"authentication_classes": [], "permission_classes": [AllowAny]}

v1 = [
    path("test", api.TestApi.as_view(), name="billing-test"),
    path("plans", api.PlanListApi.as_view(), name="billing-plans"),
    path("templates", api.TemplateListApi.as_view(), name="billing-templates"),
    path("accounts", api.AccountCreateApi.as_view(), name="billing-accounts"),
    path("accounts/<str:ref>/login-link", api.AccountLoginLinkApi.as_view(), name="billing-account-login-link"),
    path("services", api.ServiceCreateApi.as_view(), name="billing-services"),
    path("services/<str:ref>", api.ServiceApi.as_view(), name="billing-service"),
    path("services/<str:ref>/suspend", api.ServiceSuspendApi.as_view(), name="billing-service-suspend"),
    path("services/<str:ref>/unsuspend", api.ServiceUnsuspendApi.as_view(), name="billing-service-unsuspend"),
    path("services/<str:ref>/terminate", api.ServiceTerminateApi.as_view(), name="billing-service-terminate"),
    path("services/<str:ref>/change-plan", api.ServiceChangePlanApi.as_view(), name="billing-service-change-plan"),
    path("webhooks", api.WebhookEndpointListApi.as_view(), name="billing-webhooks"),
    path("webhooks/deliveries", api.WebhookDeliveryListApi.as_view(), name="billing-webhook-deliveries"),
    path("webhooks/deliveries/<str:ref>/redeliver", api.WebhookRedeliverApi.as_view(),
         name="billing-webhook-redeliver"),
    path("usage", api.UsageExportApi.as_view(), name="billing-usage"),
    path("services/<str:ref>/usage", api.UsageSummaryApi.as_view(), name="billing-service-usage"),
    path("schema/", SpectacularAPIView.as_view(urlconf="panel.api.billing_urls", **_public),
         name="billing-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="billing-schema", **_public), name="billing-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="billing-schema", **_public), name="billing-redoc"),
    re_path(r"^.*$", api.UnknownApi.as_view()),
]

urlpatterns = [path("api/billing/v1/", include(v1))]
