"""Read a Prometheus metrics endpoint (Triton's, or the gateway's) into plain dicts.

Apart from control.py because it uses prometheus-client's parser: the image's launcher imports
control.py and runs on the standard library only."""

from __future__ import annotations

import re
import urllib.request

SUFFIX = "_total"


def parse_samples(text: str) -> dict[str, dict[tuple, float]]:
    """Every sample of a text exposition under the name it is exposed as, as Prometheus stores it.

    prometheus-client's parser renames a counter whose name lacks `_total` (Triton's
    nv_inference_request_success, an exported histogram's `_count`) to `<name>_total`; that is undone."""
    from prometheus_client.parser import text_string_to_metric_families

    declared_counters = set(re.findall(r"^# TYPE (\S+) counter\s*$", text, re.MULTILINE))
    values: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        renamed = family.type == "counter" and family.name in declared_counters
        for sample in family.samples:
            name = sample.name[: -len(SUFFIX)] if renamed and sample.name == family.name + SUFFIX else sample.name
            values.setdefault(name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return values


def scrape_metrics(metrics_url: str) -> dict[str, dict[tuple, float]]:
    """Every sample on a metrics endpoint: name -> {sorted label items: value}."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        return parse_samples(response.read().decode())
