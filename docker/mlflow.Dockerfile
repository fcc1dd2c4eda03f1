# The stack's MLflow tracking server: MLflow plus the PostgreSQL driver, nothing else
# (the worker image carries TensorFlow; the server does not need it).
# Keep both pins equal to requirements.txt: client and server of one MLflow version
# (tests/integration/test_compose.py checks it).
FROM python:3.11-slim

ARG MLFLOW_VERSION=3.17.2
ARG PSYCOPG2_VERSION=2.9.13

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true

# mlflow[auth]: the basic-auth app (`--app-name basic-auth`) needs Flask-WTF.
RUN pip install "mlflow[auth]==${MLFLOW_VERSION}" "psycopg2-binary==${PSYCOPG2_VERSION}"

# Refuses placeholder secrets and writes the basic-auth config before `mlflow "$@"`; the
# mlflow-users service creates logins with the second script.
COPY mlflow-entrypoint.sh /usr/local/bin/mlflow-entrypoint.sh
COPY mlflow_users.py /usr/local/lib/clot-hpo/mlflow_users.py

# Non-root; /mlartifacts exists in the image owned by that user so a named volume mounted
# there starts with the same owner.
RUN useradd --create-home --uid 10001 mlflow \
    && mkdir /mlartifacts \
    && chown mlflow:mlflow /mlartifacts
USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["sh", "/usr/local/bin/mlflow-entrypoint.sh"]
CMD ["server", "--help"]
