"""Which MLflow paths the gateway forwards, and how (pure data).

Paths are matched after the mount (`/mlflow`, `/api/mlflow` or none) is removed. Anything that no
family matches is answered 404 by the gateway and never reaches MLflow. Families, not a copied
endpoint list: a test walks the installed MLflow's own routes and fails when one is not covered.
"""

from __future__ import annotations

import enum
import re


class Family(enum.Enum):
    # JSON APIs: bounded bodies, answered within the API read timeout.
    REST = "rest"
    # Artifact bytes and AI-gateway streams: any size, no total deadline, only an idle timeout.
    TRANSFER = "transfer"
    # The MLflow web UI's page and static files.
    UI = "ui"


_FAMILY_PATTERNS: dict[Family, tuple[str, ...]] = {
    Family.REST: (
        r"/(?:api|ajax-api)/[23]\.0/mlflow/.+",
        r"/ajax-api/3\.0/jobs(?:/.*)?",
        r"/graphql",
        r"/version",
        r"/health",
        r"/v1/traces",
    ),
    Family.TRANSFER: (
        r"/(?:api|ajax-api)/2\.0/mlflow-artifacts/(?:artifacts|mpu|presigned)(?:/.*)?",
        r"/(?:model-versions/)?get-artifact",
        r"/gateway/.+",
    ),
    Family.UI: (
        r"/",
        r"/static-files/.+",
        r"/build/.+",
    ),
}

_MATCHER = re.compile(
    "|".join(f"(?P<{family.value}>{'|'.join(patterns)})" for family, patterns in _FAMILY_PATTERNS.items())
)
_BY_GROUP = {family.value: family for family in Family}


def classify(path: str) -> Family | None:
    """The family of a canonical MLflow path (mount removed), or None if it is not forwarded."""
    match = _MATCHER.fullmatch(path)
    if match is None or match.lastgroup is None:
        return None
    return _BY_GROUP[match.lastgroup]
