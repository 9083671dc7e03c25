"""The panel as an ASGI app: the same HTTP views as panel.wsgi, plus the VE console's
WebSocket (``/ws/console/<ve>/``, panel/consumers.py). uvicorn serves it (make run, compose)."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "panel.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_http = get_asgi_application()  # sets Django up before the consumers import models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from panel.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_http,
    # Session cookie -> scope["user"]; the consumer checks Origin, ticket and role itself.
    "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
})
