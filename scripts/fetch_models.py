"""Put every model of a Serve config into a model directory, so runtime never touches the hub.

For each model application's `args.spec` (`args.model` names it), `<dest>/<name>/` receives, and
for its canary (`spec.canary`), `<dest>/<name>@<version>/`:
- from a hub id: the repo's files at `revision` are listed and an explicit set is downloaded:
  weights in safetensors (`*.safetensors`, plus the shard index), or `pytorch_model*.bin` for
  repos that have no safetensors, and the config/tokenizer files (`*.json`, `*.txt`, `*.model`,
  `*.tiktoken`, ...), at the top level and in sentence-transformers module folders (`1_Pooling/`).
  Exported duplicates (onnx/, openvino/, TF/Flax/Rust weights, variants) are left out.
- from a local directory: a copy of it.

A model is assembled in `<dest>/.<name>.partial-XXXX`, gets a completion record (`.fetched.json`:
source, requested revision, resolved commit, files) last, and is then renamed into place, so an
interrupted fetch never leaves a directory at `<dest>/<name>` that the Serve app would load (it
loads `<model_dir>/<name>/` when present, with `HF_HUB_OFFLINE=1`). Leftovers are removed on the
next run.

Idempotent: a model whose record matches the configured source and revision is kept, as is a
complete directory without a record (prepared elsewhere, e.g. by scripts/make_test_models.py for
air-gapped machines); anything else, or `--force`, is fetched again.

Every sentiment and embedding model, fetched or kept, then gets `model.onnx` and `model_int8.onnx`
beside its weights for `runtime: onnxruntime` (serve/onnx_runtime.py); an existing export is kept
unless `--force`. A failed export stops the run only for a model configured with that runtime.

    python scripts/fetch_models.py --config serve/serve_config.yaml --dest /models
"""

from __future__ import annotations

import argparse
import fcntl
import json
import re
import secrets
import shutil
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECORD = ".fetched.json"
LOCK = ".fetch_models.lock"
DEFAULT = "default branch"
# Leftovers of an interrupted run: a model being assembled, an old copy being replaced.
LEFTOVERS = (".*.partial-*", ".*.replaced-*")
# The weights transformers loads by default; other names beside them are duplicates
# (`consolidated.safetensors`, `model.fp16.safetensors`) or not weights (`training_args.bin`).
SAFETENSORS = re.compile(r"model(-\d+-of-\d+)?\.safetensors")
PYTORCH_BIN = re.compile(r"pytorch_model(-\d+-of-\d+)?\.bin")
# Config, tokenizer and sentence-transformers files: small, and any of them may be needed.
SUPPORT_SUFFIXES = (".json", ".txt", ".model", ".spm", ".tiktoken", ".jinja")
# sentence-transformers modules live in `<index>_<Name>/` folders named by modules.json.
MODULE_FOLDER = re.compile(r"\d+_[^/]+")
# Tasks whose models get an ONNX export (serve/onnx_runtime.py's ENCODER_TASKS).
ENCODER_TASKS = ("sentiment", "embedding")


class FetchError(Exception):
    """A source that can be reached but does not hold a loadable model."""


class Model(NamedTuple):
    """What this script needs of a model's spec."""

    source: str
    revision: str | None
    task: str | None = None
    runtime: str | None = None


def configured_models(config_path: Path) -> dict[str, Model]:
    """Every model of every application built by `serve.app:build_model_app`, by the name of
    its directory: `<name>`, and `<name>@<version>` for its canary (serve/config.py)."""
    config = yaml.safe_load(config_path.read_text())
    models: dict[str, Model] = {}
    for app in config.get("applications", []):
        if app.get("import_path") != "serve.app:build_model_app":
            continue
        name, spec = app["args"]["model"], app["args"]["spec"]
        task, runtime = spec.get("task"), spec.get("runtime")
        models[name] = Model(spec["source"], spec.get("revision"), task, runtime)
        if canary := spec.get("canary"):
            source = canary.get("source", spec["source"])
            revision = canary.get(
                "revision", spec.get("revision") if "source" not in canary else None
            )
            models[f"{name}@{canary['version']}"] = Model(source, revision, task, runtime)
    return models


def weight_files(names: Iterable[str]) -> list[str]:
    """The weights of one folder: safetensors if any, else PyTorch pickles (never both)."""
    names = list(names)
    safetensors = [n for n in names if n.endswith(".safetensors")]
    if safetensors:
        return [n for n in safetensors if SAFETENSORS.fullmatch(n)] or safetensors
    return [n for n in names if PYTORCH_BIN.fullmatch(n)]


def select_files(repo: str, files: Iterable[str]) -> list[str]:
    """The files of a hub repo a replica needs; `FetchError` naming the repo if it has no model."""
    files = list(files)
    folders: dict[str, list[str]] = {}
    for path in files:
        folder, _, name = path.rpartition("/")
        if folder == "" or MODULE_FOLDER.fullmatch(folder):
            folders.setdefault(folder, []).append(name)
    top = folders.get("", [])
    if not weight_files(top):
        others = sorted(f for f in files if f.endswith((".h5", ".msgpack", ".onnx", ".ot", ".bin")))
        found = f"; it has {', '.join(others[:5])}" if others else ""
        raise FetchError(
            f"{repo} has no weights transformers can load "
            f"(top-level *.safetensors or pytorch_model*.bin){found}"
        )
    if "config.json" not in top:
        raise FetchError(f"{repo} has no config.json")
    selected = []
    for folder, names in folders.items():
        weights = weight_files(names)
        # Only the shard index of the format taken: another one names files that are not there.
        safetensors = any(w.endswith(".safetensors") for w in weights)
        index = ".safetensors.index.json" if safetensors else ".bin.index.json"
        for name in names:
            support = name.endswith(SUPPORT_SUFFIXES) and (
                not name.endswith(".index.json") or name.endswith(index)
            )
            if name in weights or support:
                selected.append(f"{folder}/{name}" if folder else name)
    return sorted(selected)


def looks_complete(target: Path) -> bool:
    """A config plus weights at the top level: what a directory prepared elsewhere must hold."""
    if not (target / "config.json").is_file():
        return False
    return any(weight_files(p.name for p in target.iterdir() if p.is_file()))


def read_record(target: Path) -> dict[str, Any] | None:
    """The completion record of `target`, or None if it has none or it is not one of ours."""
    try:
        record = json.loads((target / RECORD).read_text())
    except (OSError, ValueError):
        return None
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, list) or not all(
        isinstance(f, dict) and isinstance(f.get("path"), str) for f in files
    ):
        return None
    return record


def decide(target: Path, source: str, revision: str | None, force: bool) -> tuple[bool, str]:
    """Whether to fetch `target` again, and the reason to log (empty for a first fetch)."""
    if not target.exists():
        return True, ""
    if force:
        return True, f"{target} exists; --force: fetching again"
    record = read_record(target)
    if record is None:
        if (target / RECORD).exists():
            return True, f"{target}/{RECORD} is unreadable; fetching again"
        if looks_complete(target):
            return False, f"{target} prepared elsewhere (no {RECORD}), kept; --force fetches it"
        return True, f"{target} is incomplete (no weights, no {RECORD}); fetching again"
    if record.get("source") != source:
        return True, f"source changed {record.get('source')} -> {source}; fetching again"
    if record.get("revision") != revision:
        old, new = record.get("revision") or DEFAULT, revision or DEFAULT
        return True, f"revision changed {old} -> {new}; fetching again"
    missing = [f["path"] for f in record.get("files", []) if not (target / f["path"]).is_file()]
    if missing:
        return True, f"{target} lacks recorded files ({', '.join(missing[:3])}); fetching again"
    if record.get("commit"):
        origin = f"{source}@{revision or DEFAULT}, commit {str(record['commit'])[:12]}"
    else:
        origin = f"copied from {source}"
    return False, f"{target} already prepared ({origin}), kept"


@contextmanager
def progress(label: str, into: Path, total_mb: float, every_s: float = 10.0) -> Iterator[None]:
    """A line every `every_s` seconds with the MB that landed in `into` so far: a first start's
    download (1.6 GB) shows in the service's own log, not only as a silent wait."""
    done = threading.Event()

    def report() -> None:
        last = ""
        while not done.wait(every_s):
            mb = sum(p.stat().st_size for p in into.rglob("*") if p.is_file()) / 1e6
            line = f"[models] {label}: {mb:.0f} of {total_mb:.0f} MB"
            if line != last:  # as printed: 2.6 and 3.0 MB are both "3", said once
                print(line, flush=True)
                last = line

    thread = threading.Thread(target=report, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def download(source: str, revision: str | None, into: Path, label: str = "") -> dict[str, Any]:
    """Download the selected files of hub repo `source` at `revision` into `into`."""
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    info = api.model_info(source, revision=revision, files_metadata=True)
    commit = info.sha
    if commit is None:
        raise FetchError(f"the hub did not resolve {source}@{revision} to a commit")
    if info.siblings is None:
        listing = {path: None for path in api.list_repo_files(source, revision=commit)}
    else:
        listing = {s.rfilename: s.size for s in info.siblings}
    files = select_files(source, listing)
    size = sum(listing[path] or 0 for path in files) / 1e6
    print(f"  commit {commit}, {len(files)} files, {size:.1f} MB: {', '.join(files)}", flush=True)
    with progress(label or source, into, size):
        for path in files:
            # Pinned to the listed commit, so a branch that moves meanwhile cannot mix two commits.
            hf_hub_download(source, path, revision=commit, local_dir=into)
    shutil.rmtree(into / ".cache", ignore_errors=True)  # the client's own per-file metadata
    return {"commit": commit}


def copy_local(source: str, into: Path) -> dict[str, Any]:
    shutil.copytree(
        source, into, dirs_exist_ok=True, ignore=shutil.ignore_patterns(RECORD, ".cache", ".git")
    )
    if not looks_complete(into):
        raise FetchError(f"{source} has no config.json or no weights (*.safetensors, *.bin)")
    return {"commit": None}


def land(partial: Path, target: Path, record: dict[str, Any]) -> None:
    """Write the completion record last, then move the assembled model into place."""
    record["files"] = [
        {"path": p.relative_to(partial).as_posix(), "size": p.stat().st_size}
        for p in sorted(partial.rglob("*"))
        if p.is_file()
    ]
    record["fetched_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    (partial / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.replaced-{secrets.token_hex(4)}")
        target.rename(old)
    partial.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # else the next run removes it


def fetch(name: str, source: str, revision: str | None, target: Path) -> None:
    partial = target.with_name(f".{name}.partial-{secrets.token_hex(4)}")
    partial.mkdir()
    try:
        if Path(source).is_dir():
            print(f"[models] {name}: copying {source} -> {target}", flush=True)
            extra = copy_local(source, partial)
        else:
            at = f"@{revision}" if revision else " (default branch; set `revision` to pin it)"
            print(f"[models] {name}: downloading {source}{at} -> {target}", flush=True)
            extra = download(source, revision, partial, name)
        land(partial, target, {"source": source, "revision": revision, **extra})
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def export_onnx(name: str, model: Model, target: Path, force: bool) -> bool:
    """Export an encoder model for ONNX Runtime. A failure is reported, and fatal (False) only for
    a model configured with `runtime: onnxruntime`: one on torch is served all the same."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from serve import onnx_runtime

    def log(message: str) -> None:
        print(f"[models] {name}: {message}", flush=True)

    try:
        onnx_runtime.export_onnx(target, str(model.task), force=force, log=log)
    except Exception as exc:  # any exporter failure: report it with the model's name
        fatal = model.runtime == "onnxruntime"
        outcome = "" if fatal else "; it runs on torch as configured, so it is served all the same"
        print(f"[models] {name}: ONNX export failed: {exc}{outcome}", file=sys.stderr, flush=True)
        return not fatal
    return True


@contextmanager
def exclusive(dest: Path) -> Iterator[None]:
    """One fetch per model directory at a time, so removing leftovers cannot hit a live fetch.

    A directory this user cannot write (prepared elsewhere and mounted, as in air-gapped setups)
    is used unlocked: nothing can be fetched into it, and keeping its models writes nothing.
    """
    try:
        lock = (dest / LOCK).open("w")
    except OSError:
        yield
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[models] another fetch is running in {dest}; waiting for it", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def remove_leftovers(dest: Path) -> None:
    for pattern in LEFTOVERS:
        for leftover in sorted(dest.glob(pattern)):
            print(f"[models] removing {leftover.name}, left by an interrupted fetch", flush=True)
            shutil.rmtree(leftover, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("serve/serve_config.yaml"))
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--force", action="store_true", help="fetch again even if present")
    args = parser.parse_args(argv)

    try:
        models = configured_models(args.config)
    except (OSError, yaml.YAMLError) as exc:
        print(f"[models] cannot read the Serve config {args.config}: {exc}", file=sys.stderr)
        return 1
    if not models:
        print(f"[models] no models configured in {args.config}", file=sys.stderr)
        return 1
    args.dest.mkdir(parents=True, exist_ok=True)
    with exclusive(args.dest):
        remove_leftovers(args.dest)
        for name, model in models.items():
            source, revision = model.source, model.revision
            target = args.dest / name
            again, why = decide(target, source, revision, args.force)
            if why:
                print(f"[models] {name}: {why}", flush=True)
            try:
                if again:
                    fetch(name, source, revision, target)
            except FetchError as exc:
                print(f"[models] {name}: could not fetch {source!r}: {exc}", file=sys.stderr)
                return 1
            except Exception as exc:  # report which model failed, and how to work around it
                print(
                    f"[models] {name}: could not fetch {source!r}: {exc}\n"
                    "  Without access to the model hub, point `source` at a local directory or "
                    "run scripts/make_test_models.py for stand-in models.",
                    file=sys.stderr,
                )
                return 1
            if model.task in ENCODER_TASKS and not export_onnx(name, model, target, args.force):
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
