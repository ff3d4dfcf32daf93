"""Derive the CLIP BPE tokenizer files Loom ships (vocab.json, merges.txt) from the BPE table.

The CLIP text models of SD 1.x, SD 2.x and SDXL all use the same byte-level BPE with 49,408
tokens. open_clip_torch (and clip-anytorch) ship that table as ``bpe_simple_vocab_16e6.txt.gz``:
one merge per line after a header. The vocabulary is, in order: the 256 byte symbols, the same
with the end-of-word marker ``</w>``, one token per merge (the first 49,152 - 256 - 2 merges),
then ``<|startoftext|>`` and ``<|endoftext|>``. This runs once, by hand; its output is committed
under ``loom/runtime/sd/configs/tokenizer/`` so open_clip is not a runtime dependency.

    python scripts/make_tokenizer.py path/to/bpe_simple_vocab_16e6.txt.gz
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "loom" / "runtime" / "sd" / "configs" / "tokenizer"
VOCAB_SIZE = 49408


def byte_symbols() -> list[str]:
    """The stand-in character of each byte, in vocabulary order (GPT-2 / CLIP byte-level BPE):
    first the printable bytes as themselves, then the others mapped to chr(256 + n)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def derive(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(bpe_gz, "rt", encoding="utf-8").read().split("\n")
    n_merges = VOCAB_SIZE - 256 * 2 - 2
    merges = lines[1:1 + n_merges]
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == VOCAB_SIZE, len(tokens)
    return {t: i for i, t in enumerate(tokens)}, merges


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    vocab, merges = derive(Path(argv[0]))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (OUT / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1:])
