"""A DELETE with a body must say that the body is JSON (pure).

MLflow 3.17's auth app takes a DELETE's parameters from its body only when the request is labelled
`Content-Type: application/json`, and from the query string otherwise; MLflow's handlers always parse
the body as JSON, whatever the label. A DELETE naming one's own model in the query and a colleague's in
an unlabelled body was authorized on the first and carried out on the second (registered models,
versions, aliases, tags). Refusing such requests makes both read the same body. MLflow's clients always
label DELETE bodies; a DELETE without a body is not affected.
"""

from __future__ import annotations

from hokusai_registry.core.asgi import Headers
from hokusai_registry.core.refusals import Reason, Refusal

JSON = b"application/json"


def _has_body(headers: Headers) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length" and value.strip() not in (b"", b"0"):
            return True
    return False


def labelled_json(headers: Headers) -> bool:
    """Exactly one Content-Type, `application/json` with any parameters. Stricter than Werkzeug's
    `is_json` (which also takes `application/*+json`), never looser: two headers are joined into one
    value that MLflow does not read as JSON."""
    types = [value for name, value in headers if name == b"content-type"]
    return len(types) == 1 and types[0].split(b";", 1)[0].strip().lower() == JSON


def unlabelled_delete_body(method: str, headers: Headers) -> Refusal | None:
    if method != "DELETE" or not _has_body(headers) or labelled_json(headers):
        return None
    return Refusal(
        Reason.BODY_NOT_JSON,
        " refused a DELETE whose body is not labelled JSON: MLflow would authorize it on its query "
        "string and carry it out on its body. Send the body with Content-Type: application/json, as "
        "MLflow's clients do. Nothing was forwarded to MLflow.",
    )
