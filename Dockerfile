# The code image: one image for every process of the platform (connectors, persist workers,
# migrate, the Dagster code server, webserver, daemon and run workers). Each container names its
# command (compose.yaml, deploy/k8s/, deploy/helm/dagster-values.yaml); the default one prints
# the commands. No secret is baked in: passwords and keys come from the environment at run time.
#
#   docker build -t marketdata:latest .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MARKETDATA_HOME=/var/lib/marketdata \
    MARKETDATA_CONFIG=/app/deploy/marketdata.yaml \
    DAGSTER_HOME=/opt/dagster/home

WORKDIR /app
# Dependencies first (a code change does not reinstall them); the package is installed editable
# from /app, because the DDL (sql/) and the Dagster files live beside the package, not in it.
COPY pyproject.toml README.md ./
COPY marketdata ./marketdata
COPY sql ./sql
COPY deploy ./deploy
COPY dagster.production.yaml workspace.yaml ./
RUN pip install -e '.[production]' \
 && useradd --system --uid 10001 --home-dir /var/lib/marketdata --shell /usr/sbin/nologin marketdata \
 && mkdir -p "$MARKETDATA_HOME" "$DAGSTER_HOME" \
 && cp dagster.production.yaml "$DAGSTER_HOME/dagster.yaml" \
 && chown -R marketdata "$MARKETDATA_HOME" "$DAGSTER_HOME"

USER 10001
CMD ["marketdata", "--help"]
