"""The no-op deployment (benchmark/noop_app.py): this project's serving overhead alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.ours import ours_config


def noop_config(model_dir: Path) -> dict[str, Any]:
    """ours_config with a model deployment that does no work, one replica."""
    config = ours_config(model_dir, replicas=1)
    app = config["applications"][1]
    app["import_path"] = "noop_app:build"
    (deployment,) = app["deployments"]
    deployment["ray_actor_options"]["num_cpus"] = 0
    return config
