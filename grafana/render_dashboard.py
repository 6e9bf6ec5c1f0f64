"""Render every panel of a Grafana dashboard to one PNG, from Prometheus data, without Grafana.

For CI artifacts and for users without Grafana: each panel's PromQL (template variables as "all",
Grafana's interval macros by their usual values) is evaluated with query_range over the chosen
window and drawn on one shared time axis, laid out as the dashboard's grid.

    python grafana/render_dashboard.py --minutes 30 --out build/serving_autoscaling.png

Prints, per panel, how many series it drew; exits 1 when a panel had none (unless --allow-empty).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt

MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
UNIT_LABELS = {"reqps": "req/s", "percentunit": "ratio", "ms": "ms", "short": ""}


def substitute(expr: str) -> str:
    for macro, value in MACROS.items():
        expr = expr.replace(macro, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) or str(
        labels
    )


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    # The http(s) URL of one of the stack's own services, given by the operator.
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as resp:  # nosec B310
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body.get('error')}")
    return body["data"]["result"]


def panels_of(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard.get("panels", []):
        found.extend(panels_of(panel) if panel.get("type") == "row" else [panel])
    return [p for p in found if p.get("targets")]


def render(dashboard: dict, prometheus: str, start: float, end: float, out: Path) -> dict[str, int]:
    panels = sorted(panels_of(dashboard), key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    columns = 2
    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(16, 3.6 * rows), sharex=True, squeeze=False)
    step = max(5.0, (end - start) / 300)
    counts: dict[str, int] = {}
    for ax, panel in zip(axes.flat, panels, strict=False):
        drawn = 0
        for target in panel["targets"]:
            for series in query_range(prometheus, substitute(target["expr"]), start, end, step):
                points = [
                    (float(t), float(v))
                    for t, v in series["values"]
                    if v not in ("NaN", "+Inf", "-Inf")
                ]
                if not points:
                    continue
                xs = [datetime.fromtimestamp(t) for t, _ in points]
                ax.plot(
                    xs,
                    [v for _, v in points],
                    linewidth=1.2,
                    label=legend(target.get("legendFormat", ""), series["metric"]),
                )
                drawn += 1
        counts[panel["title"]] = drawn
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_title(panel["title"], fontsize=10, loc="left")
        ax.set_ylabel(UNIT_LABELS.get(unit, unit), fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if drawn:
            ax.legend(fontsize=7, loc="upper left", ncol=2)
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", color="grey")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    window = f"{datetime.fromtimestamp(start):%Y-%m-%d %H:%M} - {datetime.fromtimestamp(end):%H:%M}"
    fig.suptitle(f"{dashboard.get('title', '')}  ({window})", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dashboard",
        type=Path,
        default=Path("grafana/dashboards/serving/serving_autoscaling.json"),
    )
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=30, help="window ending now")
    parser.add_argument("--out", type=Path, default=Path("build/serving_autoscaling.png"))
    parser.add_argument("--allow-empty", action="store_true")
    args = parser.parse_args(argv)

    end = time.time()
    counts = render(
        json.loads(args.dashboard.read_text()),
        args.prometheus,
        end - args.minutes * 60,
        end,
        args.out,
    )
    for title, n in counts.items():
        print(f"{n:3d} series  {title}")
    print(f"wrote {args.out}")
    empty = [title for title, n in counts.items() if n == 0]
    if empty and not args.allow_empty:
        print(f"panels without data: {empty}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
