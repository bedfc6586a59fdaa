"""Synthetic M2FP checkpoints in ModelScope's own format, for offline tests and benchmarks.

The ModelScope hub is unreachable from CI, so tests and benchmarks run on models made
here from modelscope's own ``M2FP`` class: ``full`` has the architecture of the
official CIHP ResNet-101 model (same size, same speed), ``tiny`` the same structure
scaled down for fast tests. The weights are random except where shaped so that every
photo yields parts: the transformer decoder passes its learned queries through
unchanged, and the class head maps each query to one class (cycling over the 20 parts
and ``Human``), so each query becomes a confident instance of its class whose mask
follows random image features. The maps are meaningless; they only exercise the path.

    python -m worker.synthetic --out models/m2fp-synthetic-tiny --size tiny
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from common.labels import CIHP_CLASSES, HUMAN_CLASS

_OUT = ["res2", "res3", "res4", "res5"]
SIZES: dict[str, dict[str, Any]] = {
    # From the M2FP authors' configs/cihp/m2fp_R101_bs16_265k.yaml (docs/model-and-licence.md).
    "full": dict(depth=101, stem=128, res2=256, width=64, conv_dim=256, enc_layers=6, enc_heads=8,
                 enc_ffn=1024, hidden=256, queries=100, dec_heads=8, dec_ffn=2048, dec_layers=9),
    "tiny": dict(depth=50, stem=16, res2=32, width=8, conv_dim=32, enc_layers=1, enc_heads=2,
                 enc_ffn=64, hidden=32, queries=24, dec_heads=2, dec_ffn=64, dec_layers=3),
}


def configuration(size: str) -> dict[str, Any]:
    """``configuration.json`` for a multi-person M2FP model of the given size."""
    s = SIZES[size]
    classes = list(CIHP_CLASSES) + [HUMAN_CLASS]
    return {
        "framework": "pytorch",
        "task": "image-segmentation",
        "pipeline": {"type": "m2fp-image-human-parsing"},
        "model": {
            "type": "m2fp",
            "backbone": {
                "out_features": _OUT, "depth": s["depth"], "num_groups": 1,
                "width_per_group": s["width"], "norm": "BN", "stem_out_channels": s["stem"],
                "res2_out_channels": s["res2"], "stride_in_1x1": False, "res4_dilation": 1,
                "res5_dilation": 1, "res5_multi_grid": [1, 1, 1],
            },
            "encoder": {
                "in_features": _OUT, "transformer_dropout": 0.0,
                "transformer_nheads": s["enc_heads"], "transformer_dim_feedforward": s["enc_ffn"],
                "transformer_enc_layers": s["enc_layers"], "conv_dim": s["conv_dim"],
                "mask_dim": s["conv_dim"], "transformer_in_features": ["res3", "res4", "res5"],
                "common_stride": 4,
            },
            "decoder": {
                "num_classes": len(classes), "hidden_dim": s["hidden"], "num_queries": s["queries"],
                "nheads": s["dec_heads"], "dim_feedforward": s["dec_ffn"], "dec_layers": s["dec_layers"],
                "pre_norm": False, "mask_dim": s["conv_dim"], "enforce_input_project": False,
            },
            "classes": classes,
            "num_parsing": len(CIHP_CLASSES),
            "single_human": False,
            "parsing_on": True,
            "semantic_on": False,
            "sem_seg_postprocess_before_inference": True,
            "parsing_ins_score_thr": 0.5,
            "pretrained": True,
        },
        "synthetic": f"random weights shaped for tests ({size}); meaningless output",
    }


def shape_weights(model: Any) -> None:
    """Make every query a confident instance of one class (see the module docstring)."""
    import torch

    decoder = model.sem_seg_head.predictor
    hidden, queries = decoder.query_feat.weight.shape[1], decoder.num_queries
    with torch.no_grad():
        # Zeroed output projections: each layer adds nothing to its residual stream.
        silenced = [layer.self_attn.out_proj for layer in decoder.transformer_self_attention_layers]
        silenced += [layer.multihead_attn.out_proj for layer in decoder.transformer_cross_attention_layers]
        silenced += [layer.linear2 for layer in decoder.transformer_ffn_layers]
        for linear in silenced:
            linear.weight.zero_()
            linear.bias.zero_()
        # Query q is the q-th basis direction; after the decoder's LayerNorm it stays
        # distinct, and the class head sends it to class q mod 21.
        features = torch.zeros(queries, hidden)
        features[torch.arange(queries), torch.arange(queries) % hidden] = 10.0
        decoder.query_feat.weight.copy_(features)
        normed = decoder.decoder_norm(features)
        num_classes = decoder.num_classes
        head = torch.zeros(num_classes + 1, hidden)
        for q in range(queries):
            head[q % num_classes] += normed[q]
        decoder.class_embed.weight.copy_(head * 2.0)
        decoder.class_embed.bias.zero_()
        decoder.class_embed.bias[num_classes] = -20.0  # never "no object"
        # Sharper mask logits, so mask scores (mean sigmoid inside the mask) are high.
        last = decoder.mask_embed.layers[-1]
        last.weight.mul_(20.0)


def write_model(out: Path, size: str, seed: int = 0) -> Path:
    """Write ``configuration.json`` and ``pytorch_model.pt`` into ``out`` (replaced atomically)."""
    import torch
    from modelscope.models.cv.image_human_parsing import M2FP

    torch.manual_seed(seed)
    config = configuration(size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    staging.chmod(0o755)
    (staging / "configuration.json").write_text(json.dumps(config, indent=2))
    kwargs = {k: v for k, v in config["model"].items() if k != "type"}
    kwargs["pretrained"] = False
    model = M2FP(str(staging), **json.loads(json.dumps(kwargs)))
    model.eval()
    shape_weights(model)
    torch.save({"model": model.state_dict()}, staging / "pytorch_model.pt")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = write_model(args.out, args.size, args.seed)
    print(f"wrote synthetic M2FP ({args.size}) to {path}")


if __name__ == "__main__":
    main()
