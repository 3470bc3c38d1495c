FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TRAILMARK_DATA_DIR=/data \
    TRAILMARK_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY workers ./workers
COPY tenants ./tenants
COPY migrations ./migrations
# Editable install: `trailmark migrate` finds migrations/ next to the packages.
RUN pip install -e . \
    && useradd --system --uid 10001 --home-dir /data trailmark \
    && mkdir -p /data && chown trailmark /data

USER trailmark
EXPOSE 8000
CMD ["trailmark", "api"]
