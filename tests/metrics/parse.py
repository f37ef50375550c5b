"""Reads an OpenMetrics exposition on stdin with the official client's parser and prints its
families as JSON: {name: {"type": ..., "help": ..., "samples": [[name, labels, value], ...]}}.
A document the parser rejects exits 1 with the parser's message."""
import json
import math
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = sys.stdin.read()
try:
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = {
            "type": family.type,
            "help": family.documentation,
            "samples": [
                [s.name, s.labels, s.value if math.isfinite(s.value) else str(s.value)]
                for s in family.samples
            ],
        }
except Exception as e:  # the parser's own words are the point of the test
    print(f"rejected: {e}", file=sys.stderr)
    sys.exit(1)
json.dump(families, sys.stdout)
