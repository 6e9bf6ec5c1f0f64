"""Put every model of a Serve config into a model directory, so runtime never touches the hub.

For each `args.models.<name>`: a hub id is downloaded (weights, config, tokenizer) into
`<dest>/<name>/`; a local directory is copied there. The Serve app loads `<model_dir>/<name>/`
when it exists (`args.model_dir`), with `HF_HUB_OFFLINE=1`. Idempotent: prepared models are kept
unless `--force`.

    python scripts/fetch_models.py --config serve/serve_config.yaml --dest /models
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

# Weights in safetensors only (no duplicate .bin/.h5/.onnx), plus configs and tokenizer files.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "merges.txt", "vocab.*"]


def configured_models(config_path: Path) -> dict[str, tuple[str, str | None]]:
    """`{name: (source, revision)}` for every model of every application built by
    `serve.app:build_app`."""
    config = yaml.safe_load(config_path.read_text())
    models: dict[str, tuple[str, str | None]] = {}
    for app in config.get("applications", []):
        if app.get("import_path") != "serve.app:build_app":
            continue
        for name, spec in app.get("args", {}).get("models", {}).items():
            models[name] = (spec["source"], spec.get("revision"))
    return models


def fetch(name: str, source: str, revision: str | None, target: Path) -> None:
    if Path(source).is_dir():
        print(f"[models] {name}: copying {source} -> {target}", flush=True)
        shutil.copytree(source, target, dirs_exist_ok=True)
        return
    from huggingface_hub import snapshot_download

    at = f"@{revision}" if revision else " (default branch; set `revision` to pin it)"
    print(f"[models] {name}: downloading {source}{at} -> {target}", flush=True)
    snapshot_download(
        repo_id=source, revision=revision, local_dir=target, allow_patterns=ALLOW_PATTERNS
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("serve/serve_config.yaml"))
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--force", action="store_true", help="fetch again even if present")
    args = parser.parse_args(argv)

    models = configured_models(args.config)
    if not models:
        print(f"[models] no models configured in {args.config}", file=sys.stderr)
        return 1
    for name, (source, revision) in models.items():
        target = args.dest / name
        if (target / "config.json").is_file() and not args.force:
            print(f"[models] {name}: {target} already prepared, kept")
            continue
        target.mkdir(parents=True, exist_ok=True)
        try:
            fetch(name, source, revision, target)
        except Exception as exc:  # report which model failed, and how to work around it
            print(
                f"[models] {name}: could not fetch {source!r}: {exc}\n"
                "  Without access to the model hub, point `source` at a local directory or run "
                "scripts/make_test_models.py for stand-in models.",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
