CREATE DATABASE mlflow;
-- MLflow's auth app: users, roles (teams) and grants.
CREATE DATABASE mlflow_auth;
