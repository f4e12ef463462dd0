#!/usr/bin/env bash
# Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d):
# POSTGRES_DB (Airflow metadata) exists already; add the BloodNet results database and its role.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname "${POSTGRES_DB}" \
  -v pw="${BLOODNET_DB_PASSWORD}" <<'SQL'
CREATE ROLE bloodnet LOGIN PASSWORD :'pw';
CREATE DATABASE bloodnet OWNER bloodnet;
SQL
