"""deploy/prometheus/alerts.yml: valid rule file, valid PromQL, and only metrics the gateway exports."""

from __future__ import annotations

import re
from pathlib import Path

import promql_parser
import yaml

from hokusai_registry.ops.metrics import Metrics

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


def exported_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        for sample in family.samples:
            names.add(sample.name)
        if family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def test_rule_file_is_valid() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert {"HokusaiProxyErrorRate", "HokusaiUpstreamDown", "HokusaiUpstreamLatencyHigh"} <= {
        r["alert"] for r in rules
    }
    exported = exported_names()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("page", "warn")
        assert rule["annotations"]["summary"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"])
        promql_parser.parse(rule["expr"])  # raises on invalid PromQL
        for name in re.findall(r"\bhokusai_[a-z_]+", rule["expr"]):
            assert name in exported, f"{rule['alert']} uses {name}, which the gateway does not export"
