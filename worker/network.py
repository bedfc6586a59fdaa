"""M2FP's network as four exportable modules: normalized image tensor → class and mask logits.

modelscope's ``M2FP.forward`` cannot be exported as it is (docs/model-and-licence.md, "How the network is exported"):
its deformable attention tries mmcv's CUDA function inside a try/except, the pixel
decoder turns feature sizes into Python numbers (so a traced graph only works at the
size it was traced at), and the transformer decoder writes its attention mask in place
through ``torch.where``. The modules here hold the loaded model's own submodules and
run the same arithmetic in an exportable form:

- the deformable attention calls mmcv's pure-PyTorch function directly (the one
  modelscope falls back to on the CPU);
- feature sizes, reference points and level boundaries come from tensor shapes, so one
  exported graph serves every input size;
- ``attn_mask[where(all masked)] = False`` becomes ``attn_mask & ~attn_mask.all(-1)``.

The network is cut into four parts (:data:`PARTS`) where precision may change: the
backbone, the pixel decoder's deformable-attention encoder, the FPN with the transformer
decoder's layers, and the prediction heads. Each is exported as its own graph, so the
OpenVINO engine can compile each at its own precision (docs/performance.md, "Precision").
In eager torch, :class:`ParsingNetwork` (the parts in a row) gives the same logits as the
model (tests check this); the model's postprocess stays outside, in :mod:`worker.postprocess`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

# Mean and std the model normalizes with (M2FP.pixel_mean / pixel_std), and the
# multiple both padded sides are rounded up to (M2FP.size_divisibility).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
SIZE_DIVISIBILITY = 32

Size = Union[int, torch.Tensor]  # a Python int in eager mode, a traced tensor while exporting


def _as_tensor(value: Size) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.tensor(value)


class Backbone(nn.Module):
    """The ResNet: image → its four feature maps, finest first."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.names = list(model.sem_seg_head.pixel_decoder.in_features)  # res2 .. res5

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.backbone(image)
        return tuple(features[name] for name in self.names)


class PixelEncoder(nn.Module):
    """The pixel decoder's deformable-attention encoder: the three coarse feature maps →
    the multi-scale features, coarsest first. M2FP trained this part in fp32 (its
    ``forward_features`` runs under ``autocast(enabled=False)``), so mixed precision keeps it
    in fp32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.decoder = model.sem_seg_head.pixel_decoder

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        decoder = self.decoder
        by_name = dict(zip(decoder.in_features[-len(features):], features))
        srcs, pos = [], []
        for idx, name in enumerate(decoder.transformer_in_features[::-1]):
            x = by_name[name].float()
            srcs.append(decoder.input_proj[idx](x))
            pos.append(decoder.pe_layer(x))
        shapes = [(src.shape[2], src.shape[3]) for src in srcs]
        memory = deformable_encoder(decoder.transformer, srcs, pos, shapes)
        batch = memory.shape[0]
        levels = torch.split(memory, [h * w for h, w in shapes], dim=1)
        return tuple(z.transpose(1, 2).reshape(batch, -1, h, w) for z, (h, w) in zip(levels, shapes))


class QueryDecoder(nn.Module):
    """The pixel decoder's FPN (the finest feature map and the encoder's output → the mask
    features) and the transformer decoder's layers (→ the 100 query embeddings)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.decoder = model.sem_seg_head.pixel_decoder
        self.predictor = model.sem_seg_head.predictor

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        decoder = self.decoder
        fine, out = inputs[:decoder.num_fpn_levels], list(inputs[decoder.num_fpn_levels:])
        for idx, x in enumerate(fine[::-1]):
            lateral = decoder.lateral_convs[idx](x.float())
            y = lateral + F.interpolate(out[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            out.append(decoder.output_convs[idx](y))
        mask_features = decoder.mask_features(out[-1])
        return decoder_queries(self.predictor, out[:decoder.maskformer_num_feature_levels], mask_features), mask_features


class PredictionHeads(nn.Module):
    """The decision-making tail: queries → class logits, and the mask embedding's einsum
    with the mask features → mask logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.predictor = model.sem_seg_head.predictor

    def forward(self, queries: torch.Tensor, mask_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        predictor = self.predictor  # forward_prediction_heads without the attention mask
        decoded = predictor.decoder_norm(queries).transpose(0, 1)
        mask_embed = predictor.mask_embed(decoded)
        return predictor.class_embed(decoded), torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)


@dataclass(frozen=True)
class Part:
    """One separately exported piece of the network, with the names of its tensors."""

    name: str
    module: type[nn.Module]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    spatial: frozenset[str]  # tensors whose last two axes are the image's (scaled) height and width


FEATURES = ("res2", "res3", "res4", "res5")
MULTI_SCALE = ("ms0", "ms1", "ms2")
# In the order they run; each part's inputs are the image or earlier parts' outputs.
PARTS = (
    Part("backbone", Backbone, ("image",), FEATURES, frozenset(("image", *FEATURES))),
    Part("encoder", PixelEncoder, FEATURES[1:], MULTI_SCALE, frozenset(FEATURES[1:] + MULTI_SCALE)),
    Part("decoder", QueryDecoder, FEATURES[:1] + MULTI_SCALE, ("queries", "mask_features"),
         frozenset(FEATURES[:1] + MULTI_SCALE + ("mask_features",))),
    Part("heads", PredictionHeads, ("queries", "mask_features"), ("class_logits", "mask_logits"),
         frozenset(("mask_features", "mask_logits"))),
)


class ParsingNetwork(nn.Module):
    """The four parts in a row: ``(1, 3, H, W)`` normalized, padded to multiples of 32 →
    ``(1, Q, K+1)`` class logits and ``(1, Q, H/4, W/4)`` mask logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.parts = nn.ModuleList(part.module(model) for part in PARTS)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tensors = {"image": image}
        for part, module in zip(PARTS, self.parts):
            tensors.update(zip(part.outputs, module(*(tensors[name] for name in part.inputs))))
        return tensors["class_logits"], tensors["mask_logits"]


def deformable_encoder(encoder: Any, srcs: list[torch.Tensor], pos_embeds: list[torch.Tensor],
                       shapes: Sequence[tuple[Size, Size]]) -> torch.Tensor:
    """``MSDeformAttnTransformerEncoderOnly.forward`` without padding masks (the model
    never passes any: every valid ratio is 1)."""
    src_flatten = torch.cat([src.flatten(2).transpose(1, 2) for src in srcs], 1)
    pos_flatten = torch.cat([pos.flatten(2).transpose(1, 2) + encoder.level_embed[lvl].view(1, 1, -1)
                             for lvl, pos in enumerate(pos_embeds)], 1)
    spatial_shapes = torch.stack([torch.stack([_as_tensor(h), _as_tensor(w)]) for h, w in shapes])
    reference_points = _reference_points(shapes)
    output = src_flatten
    for layer in encoder.encoder.layers:
        attn = layer.self_attn
        src2 = deformable_attention(attn, output + pos_flatten, reference_points, output, shapes, spatial_shapes)
        output = layer.norm1(output + layer.dropout1(src2))
        output = layer.forward_ffn(output)
    return output


def _reference_points(shapes: Sequence[tuple[Size, Size]]) -> torch.Tensor:
    """Pixel centres of every level, normalized to [0, 1]: what
    ``get_reference_points`` computes with ``linspace`` and all valid ratios 1."""
    points = []
    for h, w in shapes:
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1)[None])
    return torch.cat(points, 1)  # (1, tokens, 2): the same point for every level


def deformable_attention(attn: Any, query: torch.Tensor, reference_points: torch.Tensor,
                         input_flatten: torch.Tensor, shapes: Sequence[tuple[Size, Size]],
                         spatial_shapes: torch.Tensor) -> torch.Tensor:
    """``MSDeformAttn.forward`` on the CPU path (mmcv's pure-PyTorch sampling)."""
    n, len_q, _ = query.shape
    len_in = input_flatten.shape[1]
    value = attn.value_proj(input_flatten).view(n, len_in, attn.n_heads, attn.d_model // attn.n_heads)
    offsets = attn.sampling_offsets(query).view(n, len_q, attn.n_heads, attn.n_levels, attn.n_points, 2)
    weights = attn.attention_weights(query).view(n, len_q, attn.n_heads, attn.n_levels * attn.n_points)
    weights = F.softmax(weights, -1).view(n, len_q, attn.n_heads, attn.n_levels, attn.n_points)
    normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
    locations = reference_points[:, :, None, None, None, :] + offsets / normalizer[None, None, None, :, None, :]
    return attn.output_proj(sample_levels(value, shapes, locations, weights))


def sample_levels(value: torch.Tensor, shapes: Sequence[tuple[Size, Size]], locations: torch.Tensor,
                  weights: torch.Tensor) -> torch.Tensor:
    """mmcv's ``multi_scale_deformable_attn_pytorch``, summing level by level instead of
    stacking every level's samples first (the stack alone took 0.2 s per photo in OpenVINO)."""
    batch, _, heads, dims = value.shape
    _, len_q, _, levels, points, _ = locations.shape
    values = torch.split(value, [h * w for h, w in shapes], dim=1)
    # Levels first, then points before queries, in one transpose per layer: each level is
    # then a contiguous slice (a per-level strided gather cost 2 ms each in OpenVINO), and
    # the samples come out (batch*heads, dims, points, queries), so the weighting runs
    # along the long, contiguous query axis.
    grids = (2 * locations - 1).permute(3, 0, 2, 4, 1, 5).unbind(0)  # levels x (N, H, P, Q, 2)
    level_weights = weights.permute(3, 0, 2, 4, 1).unbind(0)  # levels x (N, H, P, Q)
    output = None
    for level, (h, w) in enumerate(shapes):
        level_value = values[level].flatten(2).transpose(1, 2).reshape(batch * heads, dims, h, w)
        sampled = F.grid_sample(level_value, grids[level].flatten(0, 1), mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        term = (sampled * level_weights[level].reshape(batch * heads, 1, points, len_q)).sum(2)
        output = term if output is None else output + term
    return output.view(batch, heads * dims, len_q).transpose(1, 2).contiguous()


def decoder_queries(predictor: Any, x: list[torch.Tensor], mask_features: torch.Tensor) -> torch.Tensor:
    """``MultiScaleMaskedTransformerDecoder.forward`` up to its last layer's queries
    (:class:`PredictionHeads` makes the final predictions from them)."""
    src, pos, sizes = [], [], []
    for i in range(predictor.num_feature_levels):
        sizes.append(x[i].shape[-2:])
        pos.append(predictor.pe_layer(x[i], None).flatten(2).permute(2, 0, 1))
        level = predictor.input_proj[i](x[i]).flatten(2) + predictor.level_embed.weight[i][None, :, None]
        src.append(level.permute(2, 0, 1))
    batch = src[0].shape[1]
    query_embed = predictor.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)
    output = predictor.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)

    _, _, attn_mask = predictor.forward_prediction_heads(output, mask_features, attn_mask_target_size=sizes[0])
    for i in range(predictor.num_layers):
        level = i % predictor.num_feature_levels
        # A query whose mask covers nothing attends everywhere (the model's in-place rule).
        attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
        output = predictor.transformer_cross_attention_layers[i](
            output, src[level], memory_mask=attn_mask, memory_key_padding_mask=None,
            pos=pos[level], query_pos=query_embed)
        output = predictor.transformer_self_attention_layers[i](
            output, tgt_mask=None, tgt_key_padding_mask=None, query_pos=query_embed)
        output = predictor.transformer_ffn_layers[i](output)
        if i + 1 < predictor.num_layers:  # the last layer's masks are the heads' to make
            _, _, attn_mask = predictor.forward_prediction_heads(
                output, mask_features, attn_mask_target_size=sizes[(i + 1) % predictor.num_feature_levels])
    return output


def padded_size(width: int, height: int) -> tuple[int, int]:
    """``(w, h)`` rounded up to the model's size divisibility, as ``ImageList`` pads."""
    step = SIZE_DIVISIBILITY
    return -(-width // step) * step, -(-height // step) * step
