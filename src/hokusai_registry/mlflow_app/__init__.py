"""What runs inside MLflow's own process: the authorization function of MLflow's auth app, which
accepts only requests a gateway signed (`policy/assertions.py`). Nothing of the gateway imports it;
MLflow does, by the name in the auth config `run/mlflow_process.py` writes."""
