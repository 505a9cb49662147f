"""The registration flow, run by an older MLflow client in its own environment (not a test module).

Reads MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN like any user script; prints one JSON line with what
worked, and exits non-zero at the first failure.
"""

import json
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import sklearn  # type: ignore[import-untyped]
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

name = sys.argv[1]
done: dict[str, object] = {"mlflow": mlflow.__version__}
mlflow.set_experiment(name)
with tempfile.TemporaryDirectory() as scratch:
    notes = Path(scratch) / "notes.txt"
    notes.write_text("compat")
    features = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = LogisticRegression().fit(features, [0, 0, 1, 1])
    with mlflow.start_run() as run:
        mlflow.log_param("p", "1")
        mlflow.log_metric("m", 0.5)
        mlflow.log_artifact(str(notes))
        # Stated requirements: inferring them loads the model in a subprocess for seconds.
        requirements = [f"scikit-learn=={sklearn.__version__}"]
        mlflow.sklearn.log_model(model, "model", registered_model_name=name, pip_requirements=requirements)
    done["logged"] = True
    client = MlflowClient()
    version = client.search_model_versions(f"name='{name}'")[0].version
    client.set_registered_model_alias(name, "champion", version)
    done["alias"] = True
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    done["predictions_match"] = list(loaded.predict(features)) == list(model.predict(features))
    downloaded = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="notes.txt", dst_path=scratch + "/dl"
    )
    done["artifact_matches"] = Path(downloaded).read_text() == "compat"
print(json.dumps(done))
