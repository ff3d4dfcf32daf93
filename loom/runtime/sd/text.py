"""Encoding prompts with a ``CLIP`` (:class:`~loom.runtime.sd.types.TextEncoder`) into CONDITIONING.

Tokens: the prompt's weighted segments (:mod:`loom.runtime.sd.prompt`) are tokenized, cut into
chunks of 75 tokens (a word is not split across chunks), and each chunk becomes
``[BOS] + tokens + [EOS] + padding`` of 77; chunks are encoded as a batch and concatenated to
``[1, 77*k, D]`` (as ComfyUI and A1111 do). A plain prompt of up to 75 tokens gives exactly the
tokens — and hidden states — of diffusers' ``encode_prompt``.

Weights are applied the ComfyUI way: with ``e`` the encoding of the empty prompt (same layer),
a token of weight ``w`` becomes ``e + (z - e) * w``. (A1111 instead scales ``z`` and restores its
mean; we follow ComfyUI so its workflows give the same images.)

Layers (CLIPSetLastLayer's ``stop_at_clip_layer``, ComfyUI's numbering): ``-1`` is the last
layer, ``-2`` the penultimate, … SD 1.x/2.x apply the final layer norm to the chosen layer, SDXL
does not. Defaults (``layer_idx=None``): SD 1.x -1, SD 2.x -2, SDXL -2, which match diffusers'
pipelines with ``clip_skip=None``. Loom's SD 2.x text encoder, like diffusers', has the last
OpenCLIP block removed, so ComfyUI's -2 is its output and ``-n`` is diffusers' ``clip_skip=n-2``;
SD 1.x ``-n`` is ``clip_skip=n-1`` and SDXL ``-n`` is ``clip_skip=n-2``.

Textual-inversion embeddings (``embedding:name``) are injected as token vectors through a
temporary hook on the token-embedding layer, so the text model's own code runs unchanged.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from loom.runtime.sd import prompt as prompt_syntax
from loom.runtime.sd.types import TextEncoder

log = logging.getLogger("loom.models")

CHUNK = 75
DEFAULT_LAYER = {"sd1": -1, "sd2": -2, "sdxl": -2}
# Layers per family that Loom's encoder lacks compared with the original model (see module doc).
MISSING_LAST_LAYERS = {"sd2": 1}
PLACEHOLDER_ID = 0  # token id stood in for embedding vectors (never BOS/EOS, so pooling is unaffected)


@dataclass
class Token:
    id: int
    weight: float = 1.0
    vector: torch.Tensor | None = None  # an embedding vector replacing the id's embedding
    word_end: bool = True


# -- embeddings -------------------------------------------------------------------------------

class EmbeddingLibrary:
    """Finds and reads textual-inversion files from models/embeddings/ (and an extra folder)."""

    def __init__(self, paths: Any = None, folder: str | None = None):
        self.paths = paths
        self.folder = Path(folder) if folder else None
        self._cache: dict[tuple, dict[str, torch.Tensor]] = {}

    def _candidates(self) -> list[tuple[str, Path]]:
        found = []
        if self.paths is not None:
            try:
                root = self.paths.model_folder("embeddings")
                found += [(n, root / n) for n in self.paths.list_models("embeddings")]
            except (KeyError, OSError):
                pass
        if self.folder is not None and self.folder.is_dir():
            found += [(p.relative_to(self.folder).as_posix(), p) for p in sorted(self.folder.rglob("*"))
                      if p.is_file()]
        return found

    def find(self, name: str) -> Path | None:
        cands = self._candidates()
        stem = lambda n: n.rsplit(".", 1)[0] if "." in n.rsplit("/", 1)[-1] else n  # noqa: E731
        for match in (lambda n: n == name, lambda n: stem(n) == name,
                      lambda n: n.lower() == name.lower() or stem(n).lower() == name.lower(),
                      lambda n: stem(n).rsplit("/", 1)[-1].lower() == name.lower()):
            for n, p in cands:
                if match(n):
                    return p
        return None

    def names(self) -> list[str]:
        return [n for n, _ in self._candidates()]

    def vectors(self, path: Path) -> dict[str, torch.Tensor]:
        """``{key: tensor [n, D]}`` of an embedding file (key "clip_l"/"clip_g" for SDXL files)."""
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._cache:
            self._cache[key] = read_embedding(path)
        return self._cache[key]


def read_embedding(path: Path) -> dict[str, torch.Tensor]:
    from loom.runtime.sd.reader import ModelFileError, load_state_dict

    data = load_state_dict(path, what="embedding")
    out: dict[str, torch.Tensor] = {}
    if "string_to_param" in data:  # A1111 .pt
        params = data["string_to_param"]
        out = {"*": next(iter(params.values()))}
    elif "emb_params" in data:
        out = {"*": data["emb_params"]}
    else:
        tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        if "clip_l" in tensors or "clip_g" in tensors:  # SDXL
            out = {k: v for k, v in tensors.items() if k in ("clip_l", "clip_g")}
        elif len(tensors) == 1:  # diffusers-style {"<token>": vector}, or any single tensor
            out = {"*": next(iter(tensors.values()))}
        else:
            raise ModelFileError(f"{path.name} is not a textual-inversion embedding (keys: "
                                 f"{list(data)[:6]})")
    return {k: (v[None] if v.dim() == 1 else v.reshape(-1, v.shape[-1])).float() for k, v in out.items()}


def pick_vectors(vectors: dict[str, torch.Tensor], hidden: int, encoder_index: int, family: str):
    if family == "sdxl":
        key = "clip_l" if encoder_index == 0 else "clip_g"
        if key in vectors and vectors[key].shape[-1] == hidden:
            return vectors[key]
    for v in vectors.values():
        if v.shape[-1] == hidden:
            return v
    return None


# -- tokenizing -------------------------------------------------------------------------------

def tokenize(tokenizer, text: str, *, encoder_index: int = 0, hidden: int | None = None,
             family: str = "sd1", embeddings: EmbeddingLibrary | None = None) -> list[Token]:
    """Weighted tokens (no BOS/EOS) of ``text`` for one text encoder."""
    tokens: list[Token] = []
    for segment, weight in prompt_syntax.parse_weights(text):
        for part, is_embedding in prompt_syntax.split_embeddings(segment):
            if is_embedding:
                tokens += _embedding_tokens(part, weight, encoder_index, hidden, family, embeddings)
                continue
            if not part.strip():
                continue
            ids = tokenizer(part, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
            pieces = tokenizer.convert_ids_to_tokens(ids)
            tokens += [Token(i, weight, None, p.endswith("</w>")) for i, p in zip(ids, pieces, strict=True)]
    return tokens


def _embedding_tokens(name, weight, encoder_index, hidden, family, embeddings) -> list[Token]:
    path = embeddings.find(name) if embeddings is not None else None
    if path is None:
        available = ", ".join(embeddings.names()[:10]) if embeddings is not None else ""
        log.warning("embedding %r not found in models/embeddings/%s; ignored", name,
                    f" (available: {available})" if available else "")
        return []
    vecs = pick_vectors(embeddings.vectors(path), hidden, encoder_index, family) if hidden else None
    if vecs is None:
        dims = {k: tuple(v.shape) for k, v in embeddings.vectors(path).items()}
        log.warning("embedding %s does not fit this %s text encoder (width %s; the file has %s); "
                    "ignored", path.name, family, hidden, dims)
        return []
    toks = [Token(PLACEHOLDER_ID, weight, v, False) for v in vecs]
    toks[-1].word_end = True
    return toks


def chunk(tokens: list[Token]) -> list[list[Token]]:
    """Chunks of at most 75 tokens; a word that would straddle a boundary starts the next chunk."""
    words: list[list[Token]] = [[]]
    for t in tokens:
        words[-1].append(t)
        if t.word_end:
            words.append([])
    chunks: list[list[Token]] = [[]]
    for word in (w for w in words if w):
        if len(chunks[-1]) + len(word) > CHUNK:
            if len(word) > CHUNK:  # a very long "word": fill up, then carry on
                while word:
                    room = CHUNK - len(chunks[-1])
                    if room == 0:
                        chunks.append([])
                        continue
                    chunks[-1] += word[:room]
                    word = word[room:]
                continue
            chunks.append([])
        chunks[-1] += word
    return chunks


def _frame(tokenizer, tokens: list[Token]) -> list[Token]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    framed = [Token(tokenizer.bos_token_id)] + tokens + [Token(tokenizer.eos_token_id)]
    return framed + [Token(pad) for _ in range(CHUNK + 2 - len(framed))]


# -- encoding ---------------------------------------------------------------------------------

@contextlib.contextmanager
def _inject(encoder, vectors: dict[tuple[int, int], torch.Tensor]):
    """Replace the token embeddings at (row, position) with the given vectors during a forward."""
    if not vectors:
        yield
        return
    tm = getattr(encoder, "text_model", encoder)
    layer = tm.embeddings.token_embedding

    def hook(module, inputs, output):
        output = output.clone()
        for (row, pos), vec in vectors.items():
            output[row, pos] = vec.to(output.device, output.dtype)
        return output

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def effective_layer(clip: TextEncoder) -> int:
    idx = clip.layer_idx if clip.layer_idx is not None else DEFAULT_LAYER[clip.family]
    missing = MISSING_LAST_LAYERS.get(clip.family, 0)
    if missing and idx > -1 - missing:
        log.warning("CLIPSetLastLayer %d: this %s text encoder ends at the layer SD 2.x was trained "
                    "on (ComfyUI's -2); using that", idx, clip.family)
        idx = -1 - missing
    return idx + missing


def _select(out, encoder, layer: int, family: str) -> torch.Tensor:
    """The hidden states ``layer`` (Loom-numbered, -1 = the module's last) of one encoder."""
    hidden = out.hidden_states
    n_layers = len(hidden) - 1
    if -layer > n_layers:
        raise ValueError(f"CLIPSetLastLayer {layer}: this text encoder has only {n_layers} layers")
    if family == "sdxl":
        return hidden[layer]
    if layer == -1:
        return out.last_hidden_state
    tm = getattr(encoder, "text_model", encoder)
    return tm.final_layer_norm(hidden[layer])


def _device_of(module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def encode_tokens(clip: TextEncoder, index: int, chunks: list[list[Token]]):
    """(hidden [1, 77*k, D] float32, pooled [1, P] or None) of one encoder for token chunks."""
    encoder, tokenizer = clip.encoders[index], clip.tokenizers[index]
    layer = effective_layer(clip)
    framed = [_frame(tokenizer, c) for c in chunks]
    device = _device_of(encoder)
    ids = torch.tensor([[t.id for t in row] for row in framed], device=device)
    vectors = {(r, p): t.vector for r, row in enumerate(framed) for p, t in enumerate(row)
               if t.vector is not None}
    weights = torch.tensor([[t.weight for t in row] for row in framed], dtype=torch.float32)
    with _inject(encoder, vectors):
        out = encoder(ids, output_hidden_states=True)
    z = _select(out, encoder, layer, clip.family).float()
    text_embeds = getattr(out, "text_embeds", None)
    pooled = text_embeds[:1].float() if text_embeds is not None else None
    if (weights != 1.0).any():
        empty = encoder(torch.tensor([[t.id for t in _frame(tokenizer, [])]], device=device),
                        output_hidden_states=True)
        e = _select(empty, encoder, layer, clip.family).float()
        w = weights.to(z.device)[..., None]
        z = e + (z - e) * w
    hidden = z.reshape(1, -1, z.shape[-1]).cpu()
    return hidden, (pooled.cpu() if pooled is not None else None)


def encode_text(clip: TextEncoder, text: str | tuple[str, ...], *, paths: Any = None,
                manager: Any = None) -> list[list]:
    """CONDITIONING for ``text`` (one string, or one per text encoder as CLIPTextEncodeSDXL has).

    ``manager``: the model manager that places the encoders and applies their LoRA patches.
    """
    from loom.runtime.sd.common import default_manager

    manager = manager or default_manager()
    texts = (text,) * len(clip.encoders) if isinstance(text, str) else tuple(text)
    embeddings = EmbeddingLibrary(paths, clip.embeddings_dir)
    per_encoder = []
    for i, (tok, enc) in enumerate(zip(clip.tokenizers, clip.encoders, strict=True)):
        hidden = enc.config.hidden_size
        tokens = tokenize(tok, texts[i], encoder_index=i, hidden=hidden, family=clip.family,
                          embeddings=embeddings)
        per_encoder.append(chunk(tokens))
    # Encoders must agree on the number of chunks (SDXL concatenates their features).
    k = max(len(c) for c in per_encoder)
    per_encoder = [c + [[] for _ in range(k - len(c))] for c in per_encoder]

    items = []
    for i, enc in enumerate(clip.encoders):
        patches = tuple(p for j, p in clip.patches if j == i)
        items.append((enc, patches))
    outputs = []
    with manager.use(*items):
        for i in range(len(clip.encoders)):
            outputs.append(encode_tokens(clip, i, per_encoder[i]))
    cond = torch.cat([h for h, _ in outputs], dim=-1)
    pooled = outputs[-1][1] if clip.family == "sdxl" else None
    return [[cond, {"pooled_output": pooled}]]
