"""Depth Anything (v1 and v2) from the original checkpoints (``depth_anything_vits14.pth``,
``depth_anything_v2_vitl.pth``, …) on transformers' DepthAnythingForDepthEstimation.

The original files hold a DINOv2 backbone (``pretrained.*``) and a DPT head (``depth_head.*``);
the network sizes come from the file name, the key names are mapped here. Loom ships the configs,
so nothing is fetched.
"""

from __future__ import annotations

import re

import cv2
import numpy as np
import torch

# size -> (hidden, layers, heads, neck sizes, fusion size)
_SIZES = {
    "vits": (384, 12, 6, [48, 96, 192, 384], 64),
    "vitb": (768, 12, 12, [96, 192, 384, 768], 128),
    "vitl": (1024, 24, 16, [256, 512, 1024, 1024], 256),
}
# Which backbone layers feed the head: v1 takes the last four, v2 four spread over the depth.
_OUT_INDICES = {
    ("v1", 12): [9, 10, 11, 12], ("v1", 24): [21, 22, 23, 24],
    ("v2", 12): [3, 6, 9, 12], ("v2", 24): [5, 12, 18, 24],
}
FILES = {
    "depth_anything_vits14.pth": ("v1", "vits"), "depth_anything_vitb14.pth": ("v1", "vitb"),
    "depth_anything_vitl14.pth": ("v1", "vitl"), "depth_anything_v2_vits.pth": ("v2", "vits"),
    "depth_anything_v2_vitb.pth": ("v2", "vitb"), "depth_anything_v2_vitl.pth": ("v2", "vitl"),
}
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def config_for(filename: str):
    from transformers import DepthAnythingConfig, Dinov2Config

    version, size = FILES[filename]
    hidden, layers, heads, necks, fusion = _SIZES[size]
    backbone = Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            patch_size=14, image_size=518, out_indices=_OUT_INDICES[version, layers],
                            apply_layernorm=True, reshape_hidden_states=False)
    return DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=hidden,
                               patch_size=14, neck_hidden_sizes=necks, fusion_hidden_size=fusion)


_BLOCK = {"ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1",
          "attn.proj.weight": "attention.o_proj.weight", "attn.proj.bias": "attention.o_proj.bias"}
_UNIT = {"out_conv": "projection", "resConfUnit1.conv1": "residual_layer1.convolution1",
         "resConfUnit1.conv2": "residual_layer1.convolution2",
         "resConfUnit2.conv1": "residual_layer2.convolution1",
         "resConfUnit2.conv2": "residual_layer2.convolution2"}
_FIXED = {"pretrained.cls_token": "backbone.embeddings.cls_token",
          "pretrained.mask_token": "backbone.embeddings.mask_token",
          "pretrained.pos_embed": "backbone.embeddings.position_embeddings",
          "pretrained.patch_embed.proj.weight": "backbone.embeddings.patch_embeddings.projection.weight",
          "pretrained.patch_embed.proj.bias": "backbone.embeddings.patch_embeddings.projection.bias",
          "pretrained.norm.weight": "backbone.layernorm.weight",
          "pretrained.norm.bias": "backbone.layernorm.bias",
          "depth_head.scratch.output_conv1.weight": "head.conv1.weight",
          "depth_head.scratch.output_conv1.bias": "head.conv1.bias",
          "depth_head.scratch.output_conv2.0.weight": "head.conv2.weight",
          "depth_head.scratch.output_conv2.0.bias": "head.conv2.bias",
          "depth_head.scratch.output_conv2.2.weight": "head.conv3.weight",
          "depth_head.scratch.output_conv2.2.bias": "head.conv3.bias"}


def to_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original Depth Anything names -> DepthAnythingForDepthEstimation's (transformers 5's
    DINOv2 names: the fused qkv projection split into q_proj, k_proj, v_proj)."""
    out = {}
    for key, value in sd.items():
        if key in _FIXED:
            out[_FIXED[key]] = value
        elif m := re.fullmatch(r"pretrained\.blocks\.(\d+)\.(.+)", key):
            i, rest = m.groups()
            layer = f"backbone.encoder.layer.{i}."
            if rest.startswith("attn.qkv."):
                kind = rest.rsplit(".", 1)[1]
                for part, name in zip(value.chunk(3, dim=0), ("q", "k", "v"), strict=True):
                    out[f"{layer}attention.{name}_proj.{kind}"] = part
            else:
                out[layer + _BLOCK.get(rest, rest)] = value
        elif m := re.fullmatch(r"depth_head\.projects\.(\d)\.(weight|bias)", key):
            out[f"neck.reassemble_stage.layers.{m[1]}.projection.{m[2]}"] = value
        elif m := re.fullmatch(r"depth_head\.resize_layers\.(\d)\.(weight|bias)", key):
            out[f"neck.reassemble_stage.layers.{m[1]}.resize.{m[2]}"] = value
        elif m := re.fullmatch(r"depth_head\.scratch\.refinenet(\d)\.(.+)\.(weight|bias)", key):
            out[f"neck.fusion_stage.layers.{4 - int(m[1])}.{_UNIT.get(m[2], m[2])}.{m[3]}"] = value
        elif m := re.fullmatch(r"depth_head\.scratch\.layer(\d)_rn\.weight", key):
            out[f"neck.convs.{int(m[1]) - 1}.weight"] = value
        else:
            out[key] = value  # unknown: the strict load names it
    return out


class DepthAnything:
    """A loaded Depth Anything network with its pre- and post-processing."""

    def __init__(self, model):
        self.model = model

    def __call__(self, picture: np.ndarray) -> np.ndarray:
        """Relative depth (near = bright) of an RGB uint8 picture, uint8, same size."""
        h, w = picture.shape[:2]
        nh, nw = max(14, round(h / 14) * 14), max(14, round(w / 14) * 14)
        x = cv2.resize(picture, (nw, nh), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
        x = torch.from_numpy((x - MEAN) / STD).permute(2, 0, 1)[None]
        device = next(self.model.parameters()).device
        with torch.no_grad():
            depth = self.model(pixel_values=x.to(device)).predicted_depth[0].float().cpu().numpy()
        depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_LINEAR)
        depth -= depth.min()
        depth /= max(float(depth.max()), 1e-8)
        return (depth * 255.0).round().astype(np.uint8)
