"""What a grant is on, as MLflow keeps it: its resource type and pattern (an experiment's id, a model's or
prompt's name, `EXPERIMENT_ID/NAME` of a scorer, an AI-gateway endpoint's id, or `*` for all).

People name experiments and endpoints by id or by name, and scorers by their experiment and name;
MLflow's grants hold ids. Checked resolution asks MLflow (the resource must exist: a typo would grant
nothing); unchecked takes the value as the id it names, for removing grants on what is gone.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hokusai_registry.admin.mlflow_admin import (
    ENDPOINT_GET,
    EXPERIMENT_BY_NAME,
    EXPERIMENT_GET,
    MODEL_GET,
    SCORER_GET,
    MlflowAdmin,
    MlflowError,
)
from hokusai_registry.admin.permission_models import WILDCARD, ChangeRefused, GrantTarget
from hokusai_registry.core.refusals import Reason

PROMPT_TAG = "mlflow.prompt.is_prompt"


async def resolve(mlflow: MlflowAdmin, target: GrantTarget, *, check: bool) -> tuple[str, str]:
    """MLflow's resource type and pattern for the target's resource."""
    kind, value = target.kind, target.value
    if value == WILDCARD:
        return kind.resource_type, WILDCARD
    if kind.field == "experiment":
        return kind.resource_type, (await experiment_id(mlflow, value)) if check else value
    if kind.field in ("model", "prompt"):
        if check:
            await _check_model(mlflow, value, prompt=kind.field == "prompt")
        return kind.resource_type, value
    if kind.field == "scorer":
        experiment, _, name = value.partition("/")
        if check:
            experiment = await experiment_id(mlflow, experiment)
            query = {"experiment_id": experiment, "name": name}
            await _existing(mlflow, SCORER_GET, query, f"scorer {value!r}")
        # As MLflow keeps scorer grants: the name URL-encoded, so a / in it stays unambiguous.
        return kind.resource_type, f"{experiment}/{quote(name, safe='')}"
    return kind.resource_type, (await _endpoint_id(mlflow, value)) if check else value


async def experiment_id(mlflow: MlflowAdmin, value: str) -> str:
    """The id of the experiment with this id, else this name."""
    if value.isdigit():
        try:
            answer = await mlflow.call("GET", EXPERIMENT_GET, {"experiment_id": value})
            return str(answer["experiment"]["experiment_id"])
        except MlflowError as error:
            if error.code != "RESOURCE_DOES_NOT_EXIST":
                raise error.refusal() from None
    try:
        answer = await mlflow.call("GET", EXPERIMENT_BY_NAME, {"experiment_name": value})
    except MlflowError as error:
        if error.code == "RESOURCE_DOES_NOT_EXIST":
            raise ChangeRefused(
                Reason.NOT_FOUND, f"there is no experiment with id or name {value!r}."
            ) from None
        raise error.refusal() from None
    return str(answer["experiment"]["experiment_id"])


async def _check_model(mlflow: MlflowAdmin, name: str, *, prompt: bool) -> None:
    what = "prompt" if prompt else "registered model"
    answer = await _existing(mlflow, MODEL_GET, {"name": name}, f"{what} {name!r}")
    tags = answer.get("registered_model", {}).get("tags") or []
    is_prompt = any(tag.get("key") == PROMPT_TAG and str(tag.get("value")).lower() == "true" for tag in tags)
    # MLflow keeps the two apart: a registered-model grant does nothing for a prompt, and the reverse.
    if is_prompt and not prompt:
        raise ChangeRefused(
            Reason.INVALID_REQUEST, f"{name!r} is a prompt, not a registered model: grant on it as a prompt."
        )
    if prompt and not is_prompt:
        raise ChangeRefused(
            Reason.INVALID_REQUEST, f"{name!r} is a registered model, not a prompt: grant on it as a model."
        )


async def _endpoint_id(mlflow: MlflowAdmin, value: str) -> str:
    for query in ({"endpoint_id": value}, {"name": value}):
        try:
            answer = await mlflow.call("GET", ENDPOINT_GET, query)
        except MlflowError as error:
            if error.code != "RESOURCE_DOES_NOT_EXIST":
                raise error.refusal() from None
            continue
        return str(answer["endpoint"]["endpoint_id"])
    raise ChangeRefused(Reason.NOT_FOUND, f"there is no AI-gateway endpoint with id or name {value!r}.")


async def _existing(mlflow: MlflowAdmin, path: str, query: dict[str, str], what: str) -> dict[str, Any]:
    try:
        return await mlflow.call("GET", path, query)
    except MlflowError as error:
        if error.code == "RESOURCE_DOES_NOT_EXIST":
            raise ChangeRefused(Reason.NOT_FOUND, f"there is no {what}.") from None
        raise error.refusal() from None
