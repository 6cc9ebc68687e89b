"""Every metric the Grafana dashboard and the alert rules query is one a running hub exports.

    python check_metrics.py METRICS_URL DASHBOARD_JSON RULES_YAML

The exported names are read from the hub's /metrics (its `# TYPE` lines list every family, samples
or not; a histogram also exports _bucket, _sum and _count). The dashboard's expressions are also
handed to promtool, as recording rules, so a query Prometheus cannot parse fails here too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Iterable, List, Set, Tuple

import yaml

# Prometheus's own series, present for every scrape target; the alerts use `up` for a dead instance.
PROMETHEUS_BUILTINS = {"up"}

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan", "atan2",
}
IDENT = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)")


def exported(metrics_text: str) -> Set[str]:
    names: Set[str] = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            names.add(name)
            if kind.strip() == "histogram":
                names.update({name + "_bucket", name + "_sum", name + "_count"})
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def metric_names(expr: str) -> Set[str]:
    """The metric names a PromQL expression selects (a tokenizer, not a parser: enough for PromQL
    as written here — functions, aggregations with by/without, binary operators, ranges)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)   # strings
    e = re.sub(r"\{[^}]*\}", " ", e)                                     # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                                    # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    found = set()
    for m in IDENT.finditer(e):
        name = m.group(1)
        rest = e[m.end():].lstrip()
        if name in KEYWORDS or rest.startswith("("):
            continue
        found.add(name)
    return found


def dashboard_exprs(dash: dict) -> List[Tuple[str, str]]:
    out = []

    def walk(panels: Iterable[dict]) -> None:
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append(("panel %r" % p.get("title"), t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.match(r"\s*label_values\(\s*(.+?)\s*,\s*\w+\s*\)\s*$", q)
        if not m:
            raise SystemExit("variable %r: query %r is not label_values(SELECTOR, LABEL)" % (var.get("name"), q))
        out.append(("variable %r" % var.get("name"), m.group(1)))
    return out


def rule_exprs(rules: dict) -> List[Tuple[str, str]]:
    return [
        ("alert %r" % r.get("alert", r.get("record")), r["expr"])
        for g in rules.get("groups", [])
        for r in g.get("rules", [])
    ]


def promtool_parses(exprs: List[Tuple[str, str]]) -> None:
    """promtool check rules on the dashboard's queries, Grafana's variables filled in."""
    rules = []
    for i, (_, expr) in enumerate(exprs):
        e = expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
        e = re.sub(r"\$\w+", ".*", e)
        rules.append({"record": "dashboard:query_%d" % i, "expr": e})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
    try:
        r = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    finally:
        Path(f.name).unlink()
    if r.returncode != 0:
        raise SystemExit("promtool cannot parse a dashboard query:\n" + r.stdout + r.stderr)


def main() -> int:
    url, dash_path, rules_path = sys.argv[1:4]
    # The tokenizer must see through what the queries use, and must flag a name that is not there.
    assert metric_names('histogram_quantile(0.99, sum by (le, endpoint) (rate(x_bucket{a="b"}[5m])))') == {"x_bucket"}
    assert metric_names('sum(rate(a_total{s=~"5.."}[5m])) / sum without (i) (b) > 0.05 and on (j) up offset 5m') == {"a_total", "b", "up"}

    with urllib.request.urlopen(url, timeout=10) as resp:
        names = exported(resp.read().decode())
    if not any(n.startswith("wxhub_") for n in names):
        raise SystemExit("%s exports no wxhub_ metric" % url)

    dash = json.loads(Path(dash_path).read_text())
    rules = yaml.safe_load(Path(rules_path).read_text())
    dash_exprs = dashboard_exprs(dash)
    failures = []
    used: Set[str] = set()
    for where, expr in dash_exprs + rule_exprs(rules):
        found = metric_names(expr)
        if not found:
            failures.append("%s: no metric found in %r" % (where, expr))
        allowed = names | (PROMETHEUS_BUILTINS if where.startswith("alert") else set())
        for name in sorted(found - allowed):
            failures.append("%s queries %s, which the hub does not export" % (where, name))
        used |= found
    bogus = metric_names("rate(wxhub_no_such_metric_total[5m])") - names
    assert bogus == {"wxhub_no_such_metric_total"}, "the check would let an unknown metric through"
    if failures:
        print("\n".join(failures), file=sys.stderr)
        return 1
    promtool_parses(dash_exprs)
    wxhub_used = sorted(n for n in used if n.startswith("wxhub_"))
    print(
        "metrics: %d dashboard queries and %d alert rules use %d wxhub metrics, all exported: %s"
        % (len(dash_exprs), len(rule_exprs(rules)), len(wxhub_used), ", ".join(wxhub_used))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
