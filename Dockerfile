FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TRAILMARK_DATA_DIR=/data \
    TRAILMARK_HOST=0.0.0.0

WORKDIR /app
# The exact versions the suite passed with (make lock), installed before the code so the layer is reused.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY api ./api
COPY workers ./workers
COPY tenants ./tenants
COPY migrations ./migrations
# Editable install: `trailmark migrate` finds migrations/ next to the packages.
RUN pip install --no-deps --no-build-isolation -e . \
    && useradd --system --uid 10001 --home-dir /data trailmark \
    && mkdir -p /data && chown trailmark /data

USER trailmark
EXPOSE 8000
CMD ["trailmark", "api"]
