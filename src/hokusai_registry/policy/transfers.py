"""Who moves artifact bytes: the policy for MLflow's presigned and multipart transfers (pure).

With an S3 (or GCS, Azure) artifacts destination, MLflow 3.17 tells clients through
`/api/3.0/mlflow/server-info` that it can hand out presigned URLs, and the client then uploads files of
500 MiB or more, and downloads every file, straight from the bucket: around the gateway, and failing
wherever the bucket is not reachable. By default the gateway keeps every byte on its own path: it answers
the capability probe with both multipart flags off and refuses the calls that mint URLs. With direct
transfers switched on (HOKUSAI_DIRECT_ARTIFACT_TRANSFERS), the probe and the minting calls pass, authorized
like any call (uploads need `write`, downloads `read`), and the bytes go direct.
"""

from __future__ import annotations

import json
import re

from hokusai_registry.policy.routes import API_PREFIX

SERVER_INFO = re.compile(rf"{API_PREFIX}/3\.0/mlflow/server-info")
MINTING = re.compile(
    rf"{API_PREFIX}/2\.0/(?:mlflow-artifacts/(?:mpu/(?:create|complete|abort)|presigned)/.+"
    r"|mlflow/artifacts/presigned-(?:upload|download)-url)"
)
MULTIPART_FLAGS = ("multipart_uploads_enabled", "multipart_downloads_enabled")


def mints_urls(path: str) -> bool:
    return MINTING.fullmatch(path) is not None


def is_server_info(path: str) -> bool:
    return SERVER_INFO.fullmatch(path) is not None


def without_direct_transfers(body: bytes) -> bytes:
    """MLflow's server-info answer with both multipart flags off; anything else unchanged."""
    try:
        info = json.loads(body)
    except ValueError:
        return body
    if not isinstance(info, dict):
        return body
    for flag in MULTIPART_FLAGS:
        info[flag] = False
    return json.dumps(info).encode()
