#!/usr/bin/python3
"""Scrapes a volley /metrics endpoint with prometheus_client's own text parser
(a parser nobody here wrote) and prints what it read as JSON: one object per
sample, {"family", "type", "name", "labels", "value"}. Exits 1 with the
parser's error on anything it refuses, 2 when the endpoint does not answer 200
with the text format's content type."""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    url = sys.argv[1]
    with urllib.request.urlopen(url, timeout=10) as answer:
        kind = answer.headers.get("Content-Type", "")
        text = answer.read().decode("utf-8")
        if answer.status != 200 or not kind.startswith("text/plain"):
            print(f"{url}: {answer.status} {kind}", file=sys.stderr)
            return 2
    samples = []
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.append({
                    "family": family.name,
                    "type": family.type,
                    "name": s.name,
                    "labels": s.labels,
                    "value": s.value,
                })
    except Exception as err:  # the parser's refusal is the finding
        print(f"not the Prometheus text format: {err}\n{text}", file=sys.stderr)
        return 1
    json.dump(samples, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
