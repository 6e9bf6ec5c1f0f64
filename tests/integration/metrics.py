"""Read series out of Prometheus text exposition, summed over the nodes' metrics agents."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def histogram_buckets(text: str, name: str, **labels: str) -> dict[float, float]:
    """Cumulative bucket counts `{le: count}` of `name`, summed over series matching `labels`."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != f"{name}_bucket":
                continue
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            le = float(sample.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def batches_larger_than(buckets: dict[float, float], size: int) -> float:
    """How many observations exceeded `size` (the +Inf bucket minus the `le=size` bucket)."""
    if not buckets:
        return 0.0
    return buckets[float("inf")] - buckets.get(float(size), 0.0)


def router_responses(text: str) -> dict[tuple[str, str, str, str], float]:
    """(application, model, route, code) -> answers counted by `ray_router_responses_total`,
    summed over the model versions that answered."""
    counted: dict[tuple[str, str, str, str], float] = {}
    for (app, model, _, route, code), value in router_responses_by_version(text).items():
        counted[(app, model, route, code)] = counted.get((app, model, route, code), 0.0) + value
    return counted


def router_responses_by_version(text: str) -> dict[tuple[str, str, str, str, str], float]:
    """(application, model, version, route, code) -> answers counted by
    `ray_router_responses_total`."""
    counted: dict[tuple[str, str, str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ray_router_responses_total":
                labels = sample.labels
                key = (
                    labels["application"],
                    labels["model"],
                    labels["version"],
                    labels["route"],
                    labels["code"],
                )
                counted[key] = counted.get(key, 0.0) + sample.value
    return counted
