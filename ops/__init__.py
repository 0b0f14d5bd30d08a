"""Operations helpers: a local Prefect server and worker for labtune's deployments (``python -m ops.prefect_local``)."""
