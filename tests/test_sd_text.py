"""Prompt encoding: parity with diffusers' encode_prompt, weighting, chunks, layers, embeddings."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from sd_fixtures import (
    FAMILIES,
    sd_cpu_only,  # noqa: F401  (autouse: CPU/fp32 even on GPU machines)
    tiny_pipeline,
)

from loom.nodeapi import RunContext
from loom.runtime.sd.prompt import parse_weights, split_embeddings
from loom.runtime.sd.shipped import clip_tokenizer
from loom.runtime.sd.text import encode_text
from loom.runtime.sd.types import TextEncoder
from nodes.sd_conditioning import CLIPSetLastLayer, CLIPTextEncode, CLIPTextEncodeSDXL

FAMILY = {"sd1": "sd1", "sd2v": "sd2", "sdxl": "sdxl"}


@pytest.fixture(scope="module")
def pipes():
    return {f: tiny_pipeline(f) for f in FAMILIES}


def _clip(pipe, family) -> TextEncoder:
    encs = (pipe.text_encoder,) + ((pipe.text_encoder_2,) if family == "sdxl" else ())
    toks = (pipe.tokenizer,) + ((pipe.tokenizer_2,) if family == "sdxl" else ())
    return TextEncoder(tokenizers=toks, encoders=encs, family=FAMILY[family])


def test_shipped_tokenizer():
    tok = clip_tokenizer("clip_l")
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert tok.pad_token == "<|endoftext|>" and clip_tokenizer("open_clip").pad_token_id == 0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("text", ["a photo of a cat", "", "A portrait, oil on canvas; 4k!"])
def test_plain_prompt_matches_diffusers_exactly(pipes, family, text):
    pipe = pipes[family]
    (cond,) = CLIPTextEncode().run(text=text, clip=_clip(pipe, family))
    hidden, extra = cond[0]
    with torch.no_grad():
        if family == "sdxl":
            ref, _, pooled, _ = pipe.encode_prompt(text, text, device="cpu",
                                                   do_classifier_free_guidance=False)
            assert torch.equal(extra["pooled_output"], pooled)
        else:
            ref = pipe.encode_prompt(text, "cpu", 1, False)[0]
            assert extra["pooled_output"] is None
    assert hidden.shape == ref.shape and hidden.dtype == torch.float32
    assert torch.equal(hidden, ref)
    assert "width" not in extra  # the sampler defaults SDXL sizes to the latent's (ComfyUI)


def _hidden(encoder, ids, index, layer_norm):
    out = encoder(ids, output_hidden_states=True)
    h = out.hidden_states[index]
    if layer_norm:
        tm = getattr(encoder, "text_model", encoder)
        h = tm.final_layer_norm(h)
    return h


@torch.no_grad()
def test_clip_set_last_layer_follows_diffusers_clip_skip(pipes):
    # diffusers: SD clip_skip=k -> hidden_states[-(k+1)] + final layer norm; SDXL clip_skip=k ->
    # hidden_states[-(k+2)], no norm. (diffusers' own clip_skip path breaks on transformers 5's
    # CLIPTextModel, so the reference is computed from the same definition here.)
    text = "a photo of a cat"
    pipe = pipes["sd1"]
    ids = pipe.tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
    (clip,) = CLIPSetLastLayer().run(_clip(pipe, "sd1"), -2)
    (cond,) = CLIPTextEncode().run(text=text, clip=clip)
    torch.testing.assert_close(cond[0][0], _hidden(pipe.text_encoder, ids, -2, True), rtol=0, atol=0)
    (clip,) = CLIPSetLastLayer().run(_clip(pipe, "sd1"), -1)
    assert torch.equal(CLIPTextEncode().run(text=text, clip=clip)[0][0][0],
                       pipe.encode_prompt(text, "cpu", 1, False)[0])

    pipe = pipes["sdxl"]
    base = _clip(pipe, "sdxl")
    (clip,) = CLIPSetLastLayer().run(base, -3)
    assert base.layer_idx is None  # the input wrapper is not changed
    (cond,) = CLIPTextEncode().run(text=text, clip=clip)
    ids = [t(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
           for t in (pipe.tokenizer, pipe.tokenizer_2)]
    ref = torch.cat([_hidden(pipe.text_encoder, ids[0], -3, False),
                     _hidden(pipe.text_encoder_2, ids[1], -3, False)], -1)
    assert torch.equal(cond[0][0], ref)
    # pooled output always comes from the last layer
    assert torch.equal(cond[0][1]["pooled_output"], pipe.text_encoder_2(ids[1]).text_embeds)

    # SD 2.x: Loom's encoder lacks OpenCLIP's last block, so -2 (the default) is its output and -3
    # the layer before.
    pipe = pipes["sd2v"]
    ids = pipe.tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
    (clip,) = CLIPSetLastLayer().run(_clip(pipe, "sd2v"), -3)
    (cond,) = CLIPTextEncode().run(text=text, clip=clip)
    assert torch.equal(cond[0][0], _hidden(pipe.text_encoder, ids, -2, True))


def test_parse_weights():
    assert parse_weights("a cat") == [("a cat", 1.0)]
    got = dict(parse_weights("a (red:1.5) cat"))
    assert got == {"a ": 1.0, "red": 1.5, " cat": 1.0}
    got = parse_weights("(big) [small] ((huge)) (x:0.5)")
    w = dict(got)
    assert w["big"] == pytest.approx(1.1) and w["small"] == pytest.approx(1 / 1.1)
    assert w["huge"] == pytest.approx(1.21) and w["x"] == pytest.approx(0.5)
    assert dict(parse_weights("((a:2):1.5)"))["a"] == pytest.approx(3.0)
    assert parse_weights(r"\(not weighted\) and \[this\]") == [("(not weighted) and [this]", 1.0)]
    assert parse_weights("unclosed (paren") == [("unclosed ", 1.0), ("paren", pytest.approx(1.1))]
    assert parse_weights("stray ) and : colon") == [("stray ) and : colon", 1.0)]
    assert parse_weights("") == [("", 1.0)]
    assert split_embeddings("a embedding:foo.pt, b") == [("a ", False), ("foo.pt", True), (", b", False)]


@torch.no_grad()
def test_weights_interpolate_from_the_empty_prompt(pipes):
    pipe = pipes["sd1"]
    clip = _clip(pipe, "sd1")
    z = encode_text(clip, "a red cat")[0][0]
    zw = encode_text(clip, "a (red:1.5) cat")[0][0]
    empty = pipe.encode_prompt("", "cpu", 1, False)[0]
    # "red" is token 2 (after BOS and "a"); everything else keeps weight 1
    expected = z.clone()
    expected[:, 2] = empty[:, 2] + (z[:, 2] - empty[:, 2]) * 1.5
    torch.testing.assert_close(zw, expected, rtol=1e-5, atol=1e-5)
    # SDXL: pooled output is not weighted
    xl = _clip(pipes["sdxl"], "sdxl")
    assert torch.equal(encode_text(xl, "a (red:1.5) cat")[0][1]["pooled_output"],
                       encode_text(xl, "a red cat")[0][1]["pooled_output"])


@torch.no_grad()
def test_long_prompts_are_chunked(pipes):
    pipe = pipes["sdxl"]
    clip = _clip(pipe, "sdxl")
    words = ["catdog"] * 50  # "cat" + "dog</w>": 2 tokens, one word; 100 tokens in all
    text = " ".join(words)
    cond, extra = encode_text(clip, text)[0]
    assert cond.shape == (1, 154, 64)
    # 37 words fill 74 tokens; the 38th would straddle the 75-token boundary, so it starts chunk 2
    first, second = " ".join(words[:37]), " ".join(words[37:])
    ref1, _, pooled1, _ = pipe.encode_prompt(first, device="cpu", do_classifier_free_guidance=False)
    ref2, _, _, _ = pipe.encode_prompt(second, device="cpu", do_classifier_free_guidance=False)
    assert torch.equal(cond[:, :77], ref1) and torch.equal(cond[:, 77:], ref2)
    torch.testing.assert_close(extra["pooled_output"], pooled1, rtol=0, atol=1e-5)  # first chunk


def _embedding_of(pipe, words: str, encoder) -> torch.Tensor:
    ids = pipe.tokenizer(words, add_special_tokens=False).input_ids
    emb = getattr(encoder, "text_model", encoder).embeddings.token_embedding.weight
    return emb[ids].detach().clone()


@torch.no_grad()
def test_textual_inversion_embeddings(pipes, folders):
    emb_dir = folders.model_folder("embeddings")
    pipe = pipes["sd1"]
    vec = _embedding_of(pipe, "red cat", pipe.text_encoder)  # 2 vectors
    torch.save({"string_to_param": {"*": vec}, "name": "redcat", "step": 100}, emb_dir / "redcat.pt")
    save_file({"emb_params": vec}, str(emb_dir / "redcat2.safetensors"))
    ctx = RunContext(paths=folders)
    clip = _clip(pipe, "sd1")
    ref = CLIPTextEncode(ctx).run(text="a red cat, sitting", clip=clip)[0][0][0]
    for spelled in ("embedding:redcat", "embedding:redcat.pt", "embedding:redcat2", "EMBEDDING:RedCat2"):
        got = CLIPTextEncode(ctx).run(text=f"a {spelled}, sitting", clip=clip)[0][0][0]
        assert torch.equal(got, ref), spelled
    # weighted embeddings, and a missing one is skipped (as ComfyUI does)
    a = CLIPTextEncode(ctx).run(text="a (embedding:redcat:1.3) embedding:nothere", clip=clip)[0][0][0]
    b = CLIPTextEncode(ctx).run(text="a (red cat:1.3)", clip=clip)[0][0][0]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    # SDXL files carry one vector set per encoder
    xl = pipes["sdxl"]
    save_file({"clip_l": _embedding_of(xl, "red cat", xl.text_encoder),
               "clip_g": _embedding_of(xl, "red cat", xl.text_encoder_2)}, str(emb_dir / "xlcat.safetensors"))
    clip = _clip(xl, "sdxl")
    got = CLIPTextEncode(ctx).run(text="a embedding:xlcat", clip=clip)[0][0]
    ref = CLIPTextEncode(ctx).run(text="a red cat", clip=clip)[0][0]
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1]["pooled_output"], ref[1]["pooled_output"])


@torch.no_grad()
def test_clip_text_encode_sdxl(pipes):
    pipe = pipes["sdxl"]
    (cond,) = CLIPTextEncodeSDXL().run(clip=_clip(pipe, "sdxl"), width=832, height=1216, crop_w=0, crop_h=32,
                                       target_width=1024, target_height=1024,
                                       text_g="a castle on a hill", text_l="oil painting")
    hidden, extra = cond[0]
    ref, _, pooled, _ = pipe.encode_prompt("oil painting", "a castle on a hill", device="cpu",
                                           do_classifier_free_guidance=False)
    assert torch.equal(hidden, ref) and torch.equal(extra["pooled_output"], pooled)
    assert (extra["width"], extra["height"], extra["crop_w"], extra["crop_h"],
            extra["target_width"], extra["target_height"]) == (832, 1216, 0, 32, 1024, 1024)
    with pytest.raises(ValueError, match="needs an SDXL text encoder"):
        CLIPTextEncodeSDXL().run(clip=_clip(pipes["sd1"], "sd1"), width=1024, height=1024, crop_w=0,
                                 crop_h=0, target_width=1024, target_height=1024, text_g="a", text_l="b")
    with pytest.raises(ValueError, match="no text encoder"):
        CLIPTextEncode().run(text="a", clip=None)
