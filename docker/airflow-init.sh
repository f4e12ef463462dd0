#!/usr/bin/env bash
# One-shot set-up, run by the airflow-init service before any other Airflow process starts.
# Idempotent: `docker compose up` runs it on every start.
set -euo pipefail

# Every process must share these (DESIGN.md §7); fail loudly rather than let each container
# invent its own, which breaks worker → execution API authentication in confusing ways.
: "${AIRFLOW__CORE__FERNET_KEY:?AIRFLOW__CORE__FERNET_KEY must be set in .env}"
: "${AIRFLOW__API_AUTH__JWT_SECRET:?AIRFLOW__API_AUTH__JWT_SECRET must be set in .env}"

echo "airflow-init: migrating the Airflow metadata database"
airflow db migrate

# Inference tasks run with pool="gpu": its slots are the number of GPUs across all gpu workers,
# so the scheduler never queues more concurrent inference than there are devices.
echo "airflow-init: pool gpu = ${BLOODNET_GPU_POOL_SLOTS:-1} slot(s)"
airflow pools set gpu "${BLOODNET_GPU_POOL_SLOTS:-1}" "BloodNet inference, one slot per GPU"

# Connections come from AIRFLOW_CONN_* variables (secrets stay in .env, never in the metadata
# DB); check that both resolve before the DAGs need them.
for conn in bloodnet_s3 bloodnet_db; do
  airflow connections get "${conn}" -o json >/dev/null
  echo "airflow-init: connection ${conn} ok"
done

echo "airflow-init: results database schema, views, roles and buckets"
python - <<'PY'
import os

from bloodnet_ops.db.session import apply_sql, migrate
from bloodnet_ops.resources import sql_file
from bloodnet_ops.storage import s3_client

url = os.environ["BLOODNET_DATABASE_URL"]
migrate(url)  # every table and, at head, every dashboard view (sql/views.sql)
apply_sql(url, sql_file("roles.sql"))
print("airflow-init: schema, views and roles ok")
client = s3_client()
for bucket in sorted({os.environ["BLOODNET_INCOMING_BUCKET"], os.environ["BLOODNET_OUTPUT_BUCKET"]}):
    try:
        client.create_bucket(Bucket=bucket)
    except (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
        pass
    print(f"airflow-init: bucket {bucket} ok")
PY
echo "airflow-init: done"
