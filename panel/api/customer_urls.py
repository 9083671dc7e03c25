"""URLs of the customer API (``/api/v1``), included by panel.urls; also the urlconf its
OpenAPI schema is generated from, so that the schema describes ``/api/v1`` alone."""
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from . import customer as api

_public = {"authentication_classes": [], "permission_classes": [AllowAny]}
_info = {"custom_settings": {
    "TITLE": "Hako API",
    "DESCRIPTION": "The customer API: your tenant's VEs and jobs with a personal token "
                   "(manage.py api_token create USER TENANT). Bearer tokens hkp_...; optional "
                   "Idempotency-Key on mutating calls; errors are RFC 9457 problem+json.",
}}

v1 = [
    path("ves", api.VeListApi.as_view(), name="api-ves"),
    path("ves/<str:ve_id>", api.VeApi.as_view(), name="api-ve"),
    path("ves/<str:ve_id>/start", api.VeStartApi.as_view(), name="api-ve-start"),
    path("ves/<str:ve_id>/stop", api.VeStopApi.as_view(), name="api-ve-stop"),
    path("ves/<str:ve_id>/restart", api.VeRestartApi.as_view(), name="api-ve-restart"),
    path("ves/<str:ve_id>/destroy", api.VeDestroyApi.as_view(), name="api-ve-destroy"),
    path("ves/<str:ve_id>/resources", api.VeResourcesApi.as_view(), name="api-ve-resources"),
    path("ves/<str:ve_id>/exec", api.VeExecApi.as_view(), name="api-ve-exec"),
    path("ves/<str:ve_id>/addresses/add", api.VeAddressAddApi.as_view(), name="api-ve-address-add"),
    path("ves/<str:ve_id>/addresses/remove", api.VeAddressRemoveApi.as_view(), name="api-ve-address-remove"),
    path("ves/<str:ve_id>/migrate", api.VeMigrateApi.as_view(), name="api-ve-migrate"),
    path("jobs", api.JobListApi.as_view(), name="api-jobs"),
    path("jobs/<str:job_id>", api.JobApi.as_view(), name="api-job"),
    path("schema/", SpectacularAPIView.as_view(urlconf="panel.api.customer_urls", **_public, **_info),
         name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema", **_public), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema", **_public), name="api-redoc"),
    re_path(r"^.*$", api.UnknownApi.as_view()),
]

urlpatterns = [path("api/v1/", include(v1))]
