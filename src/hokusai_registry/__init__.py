"""Hokusai Registry: an authenticating, streaming gateway in front of an internal MLflow server."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hokusai-registry")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
