"""Parses a /metrics page (stdin) with both of Prometheus's Python parsers, the strict OpenMetrics one and the
classic text one, and prints every sample as JSON lines: {"name", "labels", "value"} (from the OpenMetrics
parse). Exits non-zero, with the parser's message, when either parser refuses the page.
Debian: python3-prometheus-client."""

import json
import sys

from prometheus_client.openmetrics import parser as openmetrics
from prometheus_client import parser as text

page = sys.stdin.read()
try:
    families = list(openmetrics.text_string_to_metric_families(page))
except Exception as e:  # the parser raises ValueError and others
    print(f"openmetrics parser: {e}", file=sys.stderr)
    sys.exit(1)
try:
    list(text.text_string_to_metric_families(page))
except Exception as e:
    print(f"text parser: {e}", file=sys.stderr)
    sys.exit(1)
for f in families:
    for s in f.samples:
        print(json.dumps({"name": s.name, "labels": s.labels, "value": s.value}))
