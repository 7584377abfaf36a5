"""Read a Prometheus metrics endpoint (Triton's, or the gateway's) into plain dicts.

Apart from control.py because it uses prometheus-client's parser: the image's launcher imports
control.py and runs on the standard library only."""

from __future__ import annotations

import urllib.request


def scrape_metrics(metrics_url: str) -> dict[str, dict[tuple, float]]:
    """Every sample on a metrics endpoint: name -> {sorted label items: value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    values: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return values
