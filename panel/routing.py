"""WebSocket routes of the ASGI app (panel/asgi.py)."""
from django.urls import path

from panel.consumers import ConsoleConsumer

websocket_urlpatterns = [
    path("ws/console/<uuid:ve_id>/", ConsoleConsumer.as_asgi()),
]
