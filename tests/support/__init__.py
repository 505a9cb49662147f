"""Shared test support that imports neither MLflow nor Redis: polling, the in-process loop, the stub
upstream and the in-process gateway."""
