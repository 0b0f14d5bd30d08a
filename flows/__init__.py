"""labtune's project flows (wiring only: load config, call stages, write the summary)."""

import os

# Prefect's ephemeral API runs its database migrations on first start (~20 s on 2 cores), longer
# than its default start-up timeout; give it room unless the user configured otherwise.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# The temporary API a local run starts would send usage telemetry and log an ERROR on machines without
# internet access (labs, air-gapped GPU boxes); keep runs offline unless the user opted in.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
