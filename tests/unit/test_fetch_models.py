"""scripts/fetch_models.py on local sources, and on hub ids against a stand-in hub over HTTP.

The hub tests run the real script and the real `huggingface_hub` client against
tests/unit/hub_server.py, which serves tiny transformers models built here, as huggingface.co
serves repos: several commits, LFS weights behind a redirect, exported duplicates beside them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, SERVE_CONFIG, load_script
from tests.unit.hub_server import FakeHub

SCRIPT = ROOT / "scripts" / "fetch_models.py"

EXPORTS = {"model.onnx", "model_int8.onnx"}  # written beside every sentiment/embedding model
SAFE_REPO = "acme/tiny-sst2"  # safetensors, plus the exports a real repo carries beside them
BIN_REPO = "acme/tiny-sst2-legacy"  # pytorch_model.bin only, as older repos are
EMPTY_REPO = "acme/no-weights"  # config and tokenizer, weights only as TF/Flax
LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
WORDS = ("the", "a", "movie", "film", "plot", "was", "is", "not", "good", "great", "bad", "dull")
# Files a real repo holds that a replica must not need: exports, training leftovers, docs.
DECOYS = {
    "onnx/model.onnx": b"onnx",
    "onnx/config.json": b"{}",
    "onnx/tokenizer.json": b"{}",
    "openvino/openvino_model.bin": b"openvino",
    "openvino/openvino_model.xml": b"<net/>",
    "coreml/text-classification/float32_model.mlpackage/Manifest.json": b"{}",
    "tf_model.h5": b"h5",
    "flax_model.msgpack": b"msgpack",
    "rust_model.ot": b"ot",
    "training_args.bin": b"args",
    "README.md": b"# tiny\n",
    ".gitattributes": b"*.bin filter=lfs diff=lfs merge=lfs -text\n",
}
SENTENCE_TRANSFORMERS = {
    "modules.json": json.dumps(
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
        ]
    ).encode(),
    "1_Pooling/config.json": b'{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}',
    "sentence_bert_config.json": b'{"max_seq_length": 64, "do_lower_case": false}',
}


def build_model(out: Path, *, positive: bool, safetensors: bool, pickle: bool) -> None:
    """A tiny DistilBERT sentiment model whose classifier bias fixes its answer."""
    import torch
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        DistilBertTokenizer,
    )

    out.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = DistilBertTokenizer(vocab={token: i for i, token in enumerate(vocab)})
    config = DistilBertConfig(
        vocab_size=len(vocab),
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=64,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([-8.0, 8.0] if positive else [8.0, -8.0]))
    tokenizer.save_pretrained(out)
    if safetensors:
        model.save_pretrained(out)
    else:
        config.save_pretrained(out)
    if pickle:
        torch.save(model.state_dict(), out / "pytorch_model.bin")


def write_files(out: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(data)


@dataclass
class Hub:
    hub: FakeHub
    dirs: dict[str, Path]  # the repo snapshots published, by "<repo>@<v1|v2>"
    commits: dict[str, str]  # their commit shas, same keys

    @property
    def url(self) -> str:
        return self.hub.url


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """The stand-in hub: SAFE_REPO and BIN_REPO at two commits (v2 answers NEGATIVE), EMPTY_REPO."""
    root = tmp_path_factory.mktemp("repos")
    dirs = {}
    for version, positive in (("v1", True), ("v2", False)):
        safe = dirs[f"{SAFE_REPO}@{version}"] = root / f"safe-{version}"
        build_model(safe, positive=positive, safetensors=True, pickle=True)
        write_files(safe, DECOYS | SENTENCE_TRANSFORMERS)
        legacy = dirs[f"{BIN_REPO}@{version}"] = root / f"bin-{version}"
        build_model(legacy, positive=positive, safetensors=False, pickle=True)
        write_files(legacy, {"tf_model.h5": b"h5", "README.md": b"# legacy\n"})
    empty = dirs[f"{EMPTY_REPO}@v1"] = root / "empty"
    build_model(empty, positive=True, safetensors=False, pickle=False)
    write_files(empty, {"tf_model.h5": b"h5", "flax_model.msgpack": b"msgpack"})
    with FakeHub() as fake:
        commits = {key: fake.add_commit(key.split("@")[0], path) for key, path in dirs.items()}
        yield Hub(fake, dirs, commits)


@pytest.fixture(autouse=True)
def healthy_hub(request: pytest.FixtureRequest) -> Iterator[None]:
    """Faults a hub test sets up end with it."""
    yield
    if "hub" in request.fixturenames:
        request.getfixturevalue("hub").hub.heal()


def model_app(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A model's application in a Serve config, as serve/serve_config.yaml lays one out."""
    return {
        "name": name,
        "import_path": "serve.app:build_model_app",
        "args": {"model": name, "spec": spec},
    }


def write_config(path: Path, models: dict[str, tuple[str, str | None]], **extra: Any) -> Path:
    router = {"import_path": "serve.app:build_app", "args": {"models": list(models)}}
    apps = [router]
    for name, (source, revision) in models.items():
        spec = {"task": "sentiment", "source": source, **extra}
        if revision:
            spec["revision"] = revision
        apps.append(model_app(name, spec))
    path.write_text(yaml.safe_dump({"applications": apps}))
    return path


def fetch_cmd(config: Path, dest: Path, *extra: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--config", str(config), "--dest", str(dest), *extra]


def hub_env(hub: Hub, home: Path) -> dict[str, str]:
    """The stand-in hub as the only hub, reached directly (no proxy), with an empty cache."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "TRANSFORMERS_")) and not k.lower().endswith("_proxy")
    }
    return env | {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(home),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def run_fetch(
    hub: Hub, tmp_path: Path, models: dict[str, tuple[str, str | None]], *extra: str
) -> subprocess.CompletedProcess[str]:
    config = write_config(tmp_path / "serve_config.yaml", models)
    return subprocess.run(
        fetch_cmd(config, tmp_path / "models", *extra),
        capture_output=True,
        text=True,
        env=hub_env(hub, tmp_path / "hf-home"),
        timeout=120,
    )


def classify(model_dir: Path) -> str:
    """What a replica would answer: the model loaded from `model_dir` alone."""
    from transformers import pipeline

    return pipeline("text-classification", model=str(model_dir))("a good movie")[0]["label"]


def files_in(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if p.name.startswith(".") and p.is_dir())


def test_fetch_copies_local_sources_and_is_idempotent(tiny_models: Path, tmp_path: Path) -> None:
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    for app in config["applications"][1:]:
        app["args"]["spec"]["source"] = str(tiny_models / app["args"]["model"])
    config_path = tmp_path / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    dest = tmp_path / "models"

    cmd = [sys.executable, str(SCRIPT), "--config", str(config_path), "--dest", str(dest)]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert first.stdout.count("copying") == 3
    for name in ("sentiment", "summarization", "embedding"):
        assert (dest / name / "config.json").is_file()
        record = json.loads((dest / name / ".fetched.json").read_text())
        assert record["source"] == str(tiny_models / name)
        assert files_in(dest / name) - {".fetched.json"} == files_in(tiny_models / name)
        exports = EXPORTS if name != "summarization" else set()
        assert files_in(dest / name) & EXPORTS == exports

    second = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "copying" not in second.stdout
    assert second.stdout.count("already prepared") == 3
    assert second.stdout.count("model_int8.onnx exist, kept") == 2


def test_fetch_unreachable_source_fails_clearly(tmp_path: Path) -> None:
    config = {
        "applications": [model_app("sentiment", {"task": "sentiment", "source": "/nonexistent/x"})]
    }
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(config_path), "--dest", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "sentiment: could not fetch '/nonexistent/x'" in result.stderr


def test_configured_models_are_the_model_applications_and_their_canaries(tmp_path: Path) -> None:
    """A canary is fetched beside its stable model as `<name>@<version>`, from the stable's
    source (and revision) unless it names its own; the Router's args name no source."""
    script = load_script(SCRIPT)
    config = write_config(
        tmp_path / "serve_config.yaml",
        {"sentiment": (SAFE_REPO, "abc123"), "embedding": (BIN_REPO, None)},
        runtime="onnxruntime",
    )
    apps = yaml.safe_load(config.read_text())["applications"]
    apps[1]["args"]["spec"]["canary"] = {"version": "2", "steps": [50, 100]}
    apps[2]["args"]["spec"]["canary"] = {"version": "v2", "source": EMPTY_REPO}
    config.write_text(yaml.safe_dump({"applications": apps}))
    model = script.Model
    assert script.configured_models(config) == {
        "sentiment": model(SAFE_REPO, "abc123", "sentiment", "onnxruntime"),
        "sentiment@2": model(SAFE_REPO, "abc123", "sentiment", "onnxruntime"),
        "embedding": model(BIN_REPO, None, "sentiment", "onnxruntime"),
        # Its own source: the default branch, not the stable source's pinned revision.
        "embedding@v2": model(EMPTY_REPO, None, "sentiment", "onnxruntime"),
    }
    # The shipped config: one model directory per model application, no canary.
    assert set(script.configured_models(SERVE_CONFIG)) == {
        "sentiment",
        "summarization",
        "embedding",
    }


def test_canary_weights_land_beside_the_stable_ones(tiny_models: Path, tmp_path: Path) -> None:
    """`<dest>/<name>@<version>/` is prepared like `<dest>/<name>/`, from the stable source."""
    script = load_script(SCRIPT)
    source = str(tiny_models / "summarization")  # no ONNX export: quick
    config = write_config(tmp_path / "serve_config.yaml", {"summary": (source, None)})
    apps = yaml.safe_load(config.read_text())["applications"]
    apps[1]["args"]["spec"].update(task="summarization", canary={"version": "2"})
    config.write_text(yaml.safe_dump({"applications": apps}))
    dest = tmp_path / "models"
    assert script.main(["--config", str(config), "--dest", str(dest)]) == 0
    for name in ("summary", "summary@2"):
        assert json.loads((dest / name / ".fetched.json").read_text())["source"] == source
        assert files_in(dest / name) - {".fetched.json"} == files_in(tiny_models / "summarization")


def test_hub_models_land_with_loadable_weights_only(hub: Hub, tmp_path: Path) -> None:
    """safetensors preferred, .bin when that is all there is; exports and leftovers stay behind."""
    sent = len(hub.hub.downloads())
    result = run_fetch(
        hub,
        tmp_path,
        {"sentiment": (SAFE_REPO, hub.commits[f"{SAFE_REPO}@v1"]), "legacy": (BIN_REPO, None)},
    )
    assert result.returncode == 0, result.stderr
    dest = tmp_path / "models"
    support = {"config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"}
    st_files = {"modules.json", "1_Pooling/config.json", "sentence_bert_config.json"}
    assert files_in(dest / "sentiment") == support | st_files | EXPORTS | {
        "model.safetensors",
        ".fetched.json",
    }
    assert files_in(dest / "legacy") == support | EXPORTS | {"pytorch_model.bin", ".fetched.json"}
    assert leftovers(dest) == []

    record = json.loads((dest / "sentiment" / ".fetched.json").read_text())
    assert record["source"] == SAFE_REPO
    assert record["revision"] == record["commit"] == hub.commits[f"{SAFE_REPO}@v1"]
    # The record lists what was fetched; the exports are made from it afterwards.
    assert {f["path"] for f in record["files"]} == files_in(dest / "sentiment") - {
        ".fetched.json",
        *EXPORTS,
    }
    legacy = json.loads((dest / "legacy" / ".fetched.json").read_text())
    assert legacy["revision"] is None
    assert legacy["commit"] == hub.commits[f"{BIN_REPO}@v2"]  # the default branch's head
    # Chosen from the listing: nothing else was even downloaded.
    downloaded = hub.hub.downloads()[sent:]
    landed = [
        f
        for d in ("sentiment", "legacy")
        for f in files_in(dest / d) - EXPORTS
        if f != ".fetched.json"
    ]
    assert sorted(downloaded) == sorted(landed)

    assert classify(dest / "sentiment") == "POSITIVE"  # v1
    assert classify(dest / "legacy") == "NEGATIVE"  # v2, the default branch


def test_interrupted_download_never_lands(hub: Hub, tmp_path: Path) -> None:
    """A weights file cut short fails the run with nothing at the target; the next run lands it."""
    models = {"sentiment": (SAFE_REPO, hub.commits[f"{SAFE_REPO}@v1"])}
    hub.hub.cut(SAFE_REPO, "model.safetensors", keep=4096)
    failed = run_fetch(hub, tmp_path, models)
    assert failed.returncode == 1
    assert f"sentiment: could not fetch '{SAFE_REPO}'" in failed.stderr
    assert "scripts/make_test_models.py" in failed.stderr
    dest = tmp_path / "models"
    assert not (dest / "sentiment").exists()
    assert leftovers(dest) == []

    hub.hub.heal()
    again = run_fetch(hub, tmp_path, models)
    assert again.returncode == 0, again.stderr
    landed = dest / "sentiment" / "model.safetensors"
    assert landed.read_bytes() == (hub.dirs[f"{SAFE_REPO}@v1"] / "model.safetensors").read_bytes()
    assert classify(dest / "sentiment") == "POSITIVE"


def test_killed_fetch_leaves_only_a_partial_dir_the_next_run_removes(
    hub: Hub, tmp_path: Path
) -> None:
    models = {"sentiment": (SAFE_REPO, hub.commits[f"{SAFE_REPO}@v1"])}
    config = write_config(tmp_path / "serve_config.yaml", models)
    dest = tmp_path / "models"
    stalled = hub.hub.stall(SAFE_REPO, "model.safetensors", keep=4096)
    proc = subprocess.Popen(
        fetch_cmd(config, dest),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=hub_env(hub, tmp_path / "hf-home"),
    )
    try:
        assert stalled.wait(timeout=60), "the fetch never reached the weights"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert not (dest / "sentiment").exists()
    assert [name.split("-")[0] for name in leftovers(dest)] == [".sentiment.partial"]

    hub.hub.heal()
    result = run_fetch(hub, tmp_path, models)
    assert result.returncode == 0, result.stderr
    assert "left by an interrupted fetch" in result.stdout
    assert leftovers(dest) == []
    assert classify(dest / "sentiment") == "POSITIVE"


def test_directory_without_record_is_kept_only_if_complete(hub: Hub, tmp_path: Path) -> None:
    """Prepared elsewhere (config + weights) is kept; config alone, as older fetches left, isn't."""
    dest = tmp_path / "models"
    (dest / "old").mkdir(parents=True)
    shutil.copy(hub.dirs[f"{SAFE_REPO}@v1"] / "config.json", dest / "old")
    shutil.copytree(hub.dirs[f"{SAFE_REPO}@v2"], dest / "elsewhere")
    models = {"old": (SAFE_REPO, None), "elsewhere": (SAFE_REPO, hub.commits[f"{SAFE_REPO}@v1"])}
    sent = len(hub.hub.downloads())

    result = run_fetch(hub, tmp_path, models)
    assert result.returncode == 0, result.stderr
    assert "old: " in result.stdout and "incomplete" in result.stdout
    assert (dest / "old" / "model.safetensors").is_file()
    assert (dest / "old" / ".fetched.json").is_file()
    assert "elsewhere: " in result.stdout and "prepared elsewhere" in result.stdout
    assert not (dest / "elsewhere" / ".fetched.json").exists()
    assert (dest / "elsewhere" / "onnx" / "model.onnx").is_file()  # untouched
    fetched = hub.hub.downloads()[sent:]
    assert "model.safetensors" in fetched and len(fetched) == len(set(fetched))  # "old" only

    forced = run_fetch(hub, tmp_path, models, "--force")
    assert forced.returncode == 0, forced.stderr
    assert not (dest / "elsewhere" / "onnx").exists()
    assert classify(dest / "elsewhere") == "POSITIVE"  # the configured v1, not the copy's v2
    assert leftovers(dest) == []


def test_prepared_models_are_kept_where_the_fetch_cannot_write(hub: Hub, tmp_path: Path) -> None:
    """Air-gapped setups mount models prepared elsewhere, read-only to the fetch's user."""
    dest = tmp_path / "models"
    shutil.copytree(hub.dirs[f"{SAFE_REPO}@v1"], dest / "sentiment")
    if os.geteuid() == 0:  # root writes anyway: make only the lock file impossible to create
        (dest / ".fetch_models.lock").mkdir()
    else:
        dest.chmod(0o555)
    config = write_config(tmp_path / "serve_config.yaml", {"sentiment": (SAFE_REPO, None)})
    try:
        result = subprocess.run(
            fetch_cmd(config, dest),
            capture_output=True,
            text=True,
            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        )
    finally:
        dest.chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert "prepared elsewhere" in result.stdout


def test_changed_revision_is_fetched_again_same_revision_kept(hub: Hub, tmp_path: Path) -> None:
    v1, v2 = hub.commits[f"{SAFE_REPO}@v1"], hub.commits[f"{SAFE_REPO}@v2"]
    dest = tmp_path / "models"
    assert run_fetch(hub, tmp_path, {"sentiment": (SAFE_REPO, v1)}).returncode == 0
    assert classify(dest / "sentiment") == "POSITIVE"

    requests = len(hub.hub.requests)
    same = run_fetch(hub, tmp_path, {"sentiment": (SAFE_REPO, v1)})
    assert same.returncode == 0, same.stderr
    assert "already prepared" in same.stdout
    assert len(hub.hub.requests) == requests  # decided locally, from the record

    changed = run_fetch(hub, tmp_path, {"sentiment": (SAFE_REPO, v2)})
    assert changed.returncode == 0, changed.stderr
    assert f"revision changed {v1} -> {v2}" in changed.stdout
    assert json.loads((dest / "sentiment" / ".fetched.json").read_text())["commit"] == v2
    assert classify(dest / "sentiment") == "NEGATIVE"  # v2's weights
    assert leftovers(dest) == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (EMPTY_REPO, f"{EMPTY_REPO} has no weights transformers can load"),
        ("acme/missing", "Repository Not Found"),
    ],
)
def test_hub_source_without_a_model_fails_clearly(
    hub: Hub, tmp_path: Path, source: str, message: str
) -> None:
    result = run_fetch(hub, tmp_path, {"sentiment": (source, None)})
    assert result.returncode == 1
    assert f"sentiment: could not fetch '{source}'" in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "models" / "sentiment").exists()
    assert leftovers(tmp_path / "models") == []


def test_select_files_takes_one_weights_format_and_the_support_files() -> None:
    script = load_script(SCRIPT)
    select = script.select_files
    sharded = [
        "config.json",
        "generation_config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "consolidated.safetensors",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
        "tokenizer.model",
        "tokenizer.json",
        "chat_template.jinja",
        "merges.txt",
        "vocab.json",
        "cl100k_base.tiktoken",
        "onnx/config.json",
        "original/consolidated.00.pth",
        "original/params.json",
    ]
    assert select("a/b", sharded) == [
        "chat_template.jinja",
        "cl100k_base.tiktoken",
        "config.json",
        "generation_config.json",
        "merges.txt",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer.model",
        "vocab.json",
    ]
    legacy = [
        "config.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
        "tf_model.h5",
        "training_args.bin",
        "special_tokens_map.json",
        "added_tokens.json",
        "spiece.model",
        "2_Dense/config.json",
        "2_Dense/pytorch_model.bin",
        "2_Dense/tf_model.h5",
    ]
    assert select("a/b", legacy) == [
        "2_Dense/config.json",
        "2_Dense/pytorch_model.bin",
        "added_tokens.json",
        "config.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
        "special_tokens_map.json",
        "spiece.model",
    ]
    with pytest.raises(script.FetchError, match=r"a/b has no config\.json"):
        select("a/b", ["model.safetensors", "tokenizer.json"])
    with pytest.raises(
        script.FetchError, match=r"a/b has no weights .* it has flax_model\.msgpack"
    ):
        select("a/b", ["config.json", "flax_model.msgpack", "onnx/model.onnx"])


def test_hub_model_gets_onnx_exports_kept_until_forced(hub: Hub, tmp_path: Path) -> None:
    """The fetched weights are exported once; the replica's ONNX Runtime answers as torch does."""
    from serve.config import ModelSpec
    from serve.models import load_model

    models = {"sentiment": (SAFE_REPO, hub.commits[f"{SAFE_REPO}@v1"])}
    first = run_fetch(hub, tmp_path, models)
    assert first.returncode == 0, first.stderr
    target = tmp_path / "models" / "sentiment"
    assert "exporting" in first.stdout and "int8 weights" in first.stdout
    for quantize in (None, "int8"):
        spec = ModelSpec(
            task="sentiment", source=str(target), runtime="onnxruntime", quantize=quantize
        )
        model = load_model(spec)
        assert model.runtime_agreement == 1.0
        assert model.predict(["a good movie"])[0]["label"] == "POSITIVE"  # v1

    stamps = {name: (target / name).stat().st_mtime_ns for name in EXPORTS}
    again = run_fetch(hub, tmp_path, models)
    assert again.returncode == 0, again.stderr
    assert "model.onnx and model_int8.onnx exist, kept" in again.stdout
    assert {name: (target / name).stat().st_mtime_ns for name in EXPORTS} == stamps

    forced = run_fetch(hub, tmp_path, models, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "exporting" in forced.stdout
    assert all((target / name).stat().st_mtime_ns != stamps[name] for name in EXPORTS)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_failed_export_stops_only_a_model_on_onnxruntime(
    tiny_models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    runtime: str,
) -> None:
    from serve import onnx_runtime

    def broken(*args: object, **kwargs: object) -> list[Path]:
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(onnx_runtime, "export_onnx", broken)
    script = load_script(SCRIPT)
    models = {"sentiment": (str(tiny_models / "sentiment"), None)}
    config = write_config(tmp_path / "serve_config.yaml", models, runtime=runtime)
    code = script.main(["--config", str(config), "--dest", str(tmp_path / "models")])
    assert code == (1 if runtime == "onnxruntime" else 0)
    assert (tmp_path / "models" / "sentiment" / "config.json").is_file()
    stderr = capsys.readouterr().err
    assert "sentiment: ONNX export failed: exporter broke" in stderr
    assert ("served all the same" in stderr) == (runtime == "torch")


def test_download_progress_shows_in_the_services_own_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While files land, a line every interval with the MB so far, then nothing once done."""
    script = load_script(SCRIPT)
    with script.progress("sentiment", tmp_path, total_mb=3, every_s=0.05):
        for i in range(3):
            (tmp_path / f"part{i}").write_bytes(b"\0" * 1_000_000)
            time.sleep(0.2)
    lines = capsys.readouterr().out.splitlines()
    assert "[models] sentiment: 3 of 3 MB" in lines, lines
    assert lines == sorted(set(lines), key=lines.index), "a line repeated with nothing new"
