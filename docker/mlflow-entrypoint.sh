#!/bin/sh
# Entrypoint of the stack's MLflow image: `mlflow "$@"`, after two things.
#
# 1. Placeholder or short secrets are refused (exit 2), so a stack started with .env.example's
#    `change-me-*` values never runs: the admin password (MLFLOW_AUTH_ADMIN_PASSWORD) and the
#    database password (PGPASSWORD, which libpq reads: no password in any URL or command line),
#    the key that signs the UI's CSRF tokens (MLFLOW_FLASK_SERVER_SECRET_KEY).
# 2. The basic-auth app's config is written from the environment (MLFLOW_AUTH_CONFIG_PATH):
#    every signed-in user may read (default_permission = READ), users live in
#    MLFLOW_AUTH_DATABASE_URI, the admin is bootstrapped from MLFLOW_AUTH_ADMIN_USERNAME and
#    MLFLOW_AUTH_ADMIN_PASSWORD on the first start (MLflow ships no default password).
#
# tests/integration/test_shared_server_auth.py starts the real server through this script.
set -eu

refuse() {
    echo "mlflow-entrypoint: $1" >&2
    exit 2
}

check_secret() { # NAME VALUE
    case "$2" in
    "") refuse "$1 is not set: put a real secret in .env (see .env.example)" ;;
    change-me* | changeme* | CHANGE-ME* | CHANGEME* | password* | secret* | admin*)
        refuse "$1 is still a placeholder ('$2'): replace it in .env, e.g. with \`openssl rand -hex 16\`" ;;
    esac
    [ "${#2}" -ge 12 ] || refuse "$1 must be at least 12 characters long (got ${#2})"
}

check_secret MLFLOW_AUTH_ADMIN_PASSWORD "${MLFLOW_AUTH_ADMIN_PASSWORD:-}"
check_secret PGPASSWORD "${PGPASSWORD:-}"
check_secret MLFLOW_FLASK_SERVER_SECRET_KEY "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}"
: "${MLFLOW_AUTH_DATABASE_URI:?MLFLOW_AUTH_DATABASE_URI must name the users database}"
case "$MLFLOW_AUTH_DATABASE_URI" in
*://*:*@*) refuse "MLFLOW_AUTH_DATABASE_URI must not carry a password (libpq reads PGPASSWORD)" ;;
esac

MLFLOW_AUTH_CONFIG_PATH="${MLFLOW_AUTH_CONFIG_PATH:-/tmp/mlflow-basic-auth.ini}"
umask 077
cat >"$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# Each request's password check is a PBKDF2 hash (~0.1-0.5 s of CPU): cache a checked login for
# a minute. With one worker process (--workers 1) a password changed through the API takes
# effect at once; one changed in the database directly, within this many seconds.
auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL_SECONDS:-60}
INI
export MLFLOW_AUTH_CONFIG_PATH
exec mlflow "$@"
