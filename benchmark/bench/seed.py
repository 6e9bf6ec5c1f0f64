"""c. The seed article's deployment (benchmark/seed_app.py): 2 replicas, no batching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import HTTP_PORT


def seed_config(model_dir: Path) -> dict[str, Any]:
    return {
        "http_options": {"host": "127.0.0.1", "port": HTTP_PORT},
        "applications": [
            {
                "name": "seed",
                "route_prefix": "/classify",
                "import_path": "seed_app:app",
                "runtime_env": {
                    "env_vars": {"BENCH_SENTIMENT_MODEL": str(model_dir / "sentiment")}
                },
            }
        ],
    }
