"""contrib/: the Prometheus alert rules and the Grafana dashboard name only series chatd
exports, and promtool accepts the rules, their unit tests and the dashboard's queries.

Without promtool (``apt-get install prometheus``; ``make test`` does not install it,
since Debian's package also brings, and on a systemd host starts, a Prometheus server)
only the promtool checks skip; the structure and metric names are checked here either
way (no YAML library needed).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from chatd.observe.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "contrib" / "prometheus" / "chatd-alerts.yml"
ALERT_TESTS = ROOT / "contrib" / "prometheus" / "chatd-alerts.test.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "chatd.json"
# Series of Prometheus itself, not chatd.
OUTSIDE = {"up"}
# PromQL words that look like series names.
PROMQL = {
    "sum", "by", "rate", "increase", "delta", "histogram_quantile", "min", "max", "le",
    "label_values", "instance", "job", "and", "or", "on", "without", "bool",
}


class _Bus:
    published = publish_failures = received = invalid = reconnects = 0
    listening = others_listening = True


def exported_names() -> set[str]:
    """Every sample name a chatd on PostgreSQL exports (histogram and counter suffixes
    included), plus their family names."""
    metrics = Metrics()
    metrics.watch_pool(dict)
    metrics.watch_bus(_Bus())
    names = set()
    for line in metrics.render().decode().splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def series_in(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\$\w+", "", expr)  # template variables
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # label lists
    return {word for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)
            if word not in PROMQL} - OUTSIDE


def alert_exprs() -> dict[str, str]:
    """alert name -> expr, read from the rules file's own layout (``expr: |`` blocks
    or one-line exprs)."""
    exprs: dict[str, str] = {}
    lines = ALERTS.read_text().splitlines()
    name = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("- alert:"):
            name = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("expr:") and name is not None:
            value = stripped.split(":", 1)[1].strip()
            if value == "|":
                indent = len(lines[index + 1]) - len(lines[index + 1].lstrip())
                block = []
                for following in lines[index + 1:]:
                    if following.strip() and len(following) - len(following.lstrip()) < indent:
                        break
                    block.append(following.strip())
                value = " ".join(block)
            exprs[name] = value
    return exprs


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def test_alert_rules_cover_disk_errors_latency_and_node_down() -> None:
    text = ALERTS.read_text()
    exprs = alert_exprs()
    assert exprs["ChatdDiskAlmostFull"] == "chatd_disk_used_ratio >= 0.8"
    assert exprs["ChatdNodeDown"] == 'up{job="chatd"} == 0'
    assert "chatd_errors_total" in exprs["ChatdInternalErrors"]
    assert 'status=~"5.."' in exprs["ChatdHttpErrorRate"]
    assert "histogram_quantile(0.99," in exprs["ChatdDeliveryLatencyHigh"]
    assert "chatd_delivery_latency_seconds_bucket" in exprs["ChatdDeliveryLatencyHigh"]
    # every rule: a severity and a summary
    assert text.count("- alert:") == len(exprs)
    assert text.count("severity:") == len(exprs)
    assert text.count("summary:") == len(exprs)
    assert "\t" not in text


def test_rules_and_dashboard_name_only_series_chatd_exports() -> None:
    exported = exported_names()
    assert "_created" not in " ".join(exported)
    for where, exprs in (("alert", list(alert_exprs().values())),
                         ("dashboard", dashboard_exprs())):
        for expr in exprs:
            unknown = {name for name in series_in(expr)
                       if name not in exported and not name.startswith("process_")}
            assert not unknown, f"{where} expr {expr!r} names {unknown}"


def test_dashboard_is_importable_grafana_json() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] == "chatd" and board["uid"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
    assert {v["name"] for v in board["templating"]["list"]} == {"DS_PROMETHEUS", "instance"}


needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool is not installed (apt-get install prometheus)")


def _promtool(*args: str, cwd: Path) -> None:
    done = subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    _promtool("check", "rules", str(ALERTS), cwd=ROOT)
    _promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each panel's query, with the dashboard's variable filled in, as a recording rule:
    promtool parses it as PromQL."""
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for index, expr in enumerate(dashboard_exprs()):
        rules += [f"      - record: chatd:panel_{index}",
                  f"        expr: {json.dumps(expr.replace('$instance', '.*'))}"]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text("\n".join(rules) + "\n")
    _promtool("check", "rules", str(path), cwd=tmp_path)
