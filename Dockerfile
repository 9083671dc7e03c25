# The panel image (web, panel worker, beat, migrate in docker-compose.yml). Node agents
# run on the LXC hosts themselves, not from this image.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=panel.settings \
    HAKO_DATA=/var/lib/hako

RUN groupadd --system --gid 10001 hako \
 && useradd --system --uid 10001 --gid hako --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin hako \
 && install -d -o hako -g hako -m 0750 /var/lib/hako

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

# The code stays owned by root: the panel process cannot rewrite itself.
COPY . .

USER hako
EXPOSE 8000
CMD ["uvicorn", "panel.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--workers", "4", "--proxy-headers"]
