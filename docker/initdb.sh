#!/usr/bin/env bash
# Runs once, when the postgres container initialises an empty data volume
# (/docker-entrypoint-initdb.d): one role and one database for Optuna, one of each for MLflow.
# Each role owns its database, so on PostgreSQL 15+ it may create tables in `public`
# (15 revoked CREATE on `public` from ordinary roles).
# Passwords come from the environment (.env); psql's :'var' quoting keeps any characters safe.
set -euo pipefail

: "${OPTUNA_DB_PASSWORD:?OPTUNA_DB_PASSWORD must be set (see .env.example)}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set (see .env.example)}"
# A placeholder from .env.example never becomes a real database password.
for var in OPTUNA_DB_PASSWORD MLFLOW_DB_PASSWORD; do
    value="${!var}"
    case "$value" in
    change-me* | changeme*)
        echo "initdb.sh: $var is still the placeholder '$value': replace it in .env" >&2
        exit 2
        ;;
    esac
done
OPTUNA_DB="${OPTUNA_DB:-optuna}"
MLFLOW_DB="${MLFLOW_DB:-mlflow}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v optuna_db="$OPTUNA_DB" -v optuna_pw="$OPTUNA_DB_PASSWORD" \
    -v mlflow_db="$MLFLOW_DB" -v mlflow_pw="$MLFLOW_DB_PASSWORD" <<'EOSQL'
CREATE ROLE :"optuna_db" LOGIN PASSWORD :'optuna_pw';
CREATE DATABASE :"optuna_db" OWNER :"optuna_db";
REVOKE ALL ON DATABASE :"optuna_db" FROM PUBLIC;
CREATE ROLE :"mlflow_db" LOGIN PASSWORD :'mlflow_pw';
CREATE DATABASE :"mlflow_db" OWNER :"mlflow_db";
REVOKE ALL ON DATABASE :"mlflow_db" FROM PUBLIC;
EOSQL
echo "initdb.sh: created databases ${OPTUNA_DB} and ${MLFLOW_DB}, each owned by its own role"
