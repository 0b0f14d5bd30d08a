"""labtune's project flows (wiring only: load config, call stages, write the summary)."""

import os

# Prefect's ephemeral API runs its database migrations on first start (~20 s on 2 cores), longer
# than its default start-up timeout; give it room unless the user configured otherwise.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
