"""After a load test: one PNG and one HTML page from Prometheus data, on one time axis.

Users, requests per second, p50/p99 latency, error ratio and running replicas per deployment: the
panels of the "Serving & autoscaling" dashboard that tell how the run went, plus a summary table.

    python grafana/report.py --minutes 15 --out build/report   # report.png and report.html
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render_dashboard import legend, query_range, render, substitute

DASHBOARD = (
    Path(__file__).resolve().parents[1] / "grafana/dashboards/serving/serving_autoscaling.json"
)
PANELS = (
    "Locust users and requests per second",
    "Requests per second by model",
    "Latency p50 / p99 by model, and its SLO",
    "Error ratio by model",
    "Running replicas",
    "Locust response time p50 / p99 by endpoint",
)


def report_dashboard() -> dict:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p.get("title") in PANELS]
    for i, panel in enumerate(sorted(panels, key=lambda p: PANELS.index(p["title"]))):
        panel["gridPos"] = {"x": (i % 2) * 12, "y": (i // 2) * 8, "w": 12, "h": 8}
    return {"title": "Load test report", "panels": panels}


def summary(
    dashboard: dict, prometheus: str, start: float, end: float
) -> list[tuple[str, str, str]]:
    """(panel, series, 'min / mean / max') for every series drawn."""
    rows = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = substitute(target["expr"])
            for series in query_range(prometheus, expr, start, end, max(5.0, (end - start) / 300)):
                values = [float(v) for _, v in series["values"] if v not in ("NaN", "+Inf", "-Inf")]
                if values:
                    stats = (
                        f"{min(values):.3g} / {sum(values) / len(values):.3g} / {max(values):.3g}"
                    )
                    rows.append(
                        (
                            panel["title"],
                            legend(target.get("legendFormat", ""), series["metric"]),
                            stats,
                        )
                    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=15, help="window ending now")
    parser.add_argument(
        "--out", type=Path, default=Path("build/report"), help="path without suffix"
    )
    args = parser.parse_args(argv)

    end = time.time()
    start = end - args.minutes * 60
    dashboard = report_dashboard()
    png = args.out.with_suffix(".png")
    counts = render(dashboard, args.prometheus, start, end, png)
    rows = summary(dashboard, args.prometheus, start, end)
    table = "\n".join(
        f"<tr><td>{html.escape(p)}</td><td>{html.escape(s)}</td><td>{v}</td></tr>"
        for p, s, v in rows
    )
    image = base64.b64encode(png.read_bytes()).decode()
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Load test report</title>
<style>body{{font-family:sans-serif;margin:2em}}
td,th{{padding:2px 10px;text-align:left}}</style></head>
<body><h1>Load test report</h1><p>{time.strftime("%Y-%m-%d %H:%M", time.localtime(start))} to
{time.strftime("%H:%M", time.localtime(end))}, from {html.escape(args.prometheus)}</p>
<img alt="report" src="data:image/png;base64,{image}" style="max-width:100%">
<h2>Series (min / mean / max)</h2>
<table><tr><th>Panel</th><th>Series</th><th>min / mean / max</th></tr>
{table}</table></body></html>
"""
    args.out.with_suffix(".html").write_text(page)
    for title, n in counts.items():
        print(f"{n:3d} series  {title}")
    print(f"wrote {png} and {args.out.with_suffix('.html')}")
    return 0 if all(counts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
