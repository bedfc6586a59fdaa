"""M2FP's parsing postprocess, from the network's logits, as far as the service needs it.

This is ``M2FP.postprocess`` + ``instance_parsing_inference`` of modelscope 1.9.5, with
the same arithmetic, at an output size of the caller's choice (the stock pipeline uses
the photo's; the model upsamples mask logits to it before deciding anything), restricted
to what can reach an output:

- a (query, class) pair enters the model's semantic map only if its final score
  (class probability x mask score) reaches ``parsing_ins_score_thr``; the mask score is
  at most 1, so pairs whose class probability is below the threshold are skipped before
  any mask is upsampled (with trained weights that is nearly all of them);
- the model upsamples all 100 masks to the padded size at once (100 x H x W floats);
  here they are upsampled a few at a time, so the peak stays small.

The result is the model's ``semantic_outputs`` (per-class probabilities) and its human
instances above the threshold, each with its mask logits and score.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

TOPK_PER_IMAGE = 100  # M2FP.test_topk_per_image
PERSON_MIN_SCORE = 0.1  # instance_parsing_inference lists only humans scoring above this
CHUNK = 8  # masks upsampled at a time


@dataclass(frozen=True)
class ModelHeads:
    """What the postprocess needs to know about the model's classes."""

    num_parts: int  # classes of the semantic map (20 CIHP parts, background included)
    human_class: int  # the class id of person instances (num_parsing)
    threshold: float  # parsing_ins_score_thr


@dataclass
class ParsingResult:
    semantic: np.ndarray  # (num_parts, h, w) float32: the model's semantic_outputs
    person_scores: list[float]
    person_masks: list[np.ndarray]  # (h, w) float32 mask logits, one per person


def parse_logits(class_logits: torch.Tensor, mask_logits: torch.Tensor, image_size: tuple[int, int],
                 heads: ModelHeads, output_size: tuple[int, int] | None = None) -> ParsingResult:
    """``class_logits`` ``(Q, K+1)``, ``mask_logits`` ``(Q, H/4, W/4)`` of one padded image;
    ``image_size`` ``(h, w)`` is the unpadded part the model saw, ``output_size`` ``(h, w)``
    the size to decide at (default: ``image_size``)."""
    crop_h, crop_w = image_size
    height, width = output_size or image_size
    padded = (mask_logits.shape[-2] * 4, mask_logits.shape[-1] * 4)
    num_classes = class_logits.shape[-1] - 1
    scores = F.softmax(class_logits.float(), dim=-1)[:, :-1]
    top_scores, top_index = scores.flatten().topk(min(TOPK_PER_IMAGE, scores.numel()), sorted=False)
    candidates = torch.nonzero(top_scores >= heads.threshold).flatten()
    # The model adds a class's instances in ascending order of their final score; in
    # ascending class score the sums differ from it in the last bit at most.
    candidates = candidates[top_scores[candidates].argsort()]
    labels = (top_index[candidates] % num_classes).tolist()
    queries = (top_index[candidates] // num_classes).tolist()
    class_scores = top_scores[candidates]

    total = torch.zeros((heads.num_parts, height, width))
    pasted = torch.zeros((heads.num_parts, height, width), dtype=torch.uint8)  # at most TOPK_PER_IMAGE
    person_scores: list[float] = []
    person_masks: list[np.ndarray] = []
    for start in range(0, len(queries), CHUNK):
        chunk = slice(start, start + CHUNK)
        masks = F.interpolate(mask_logits[queries[chunk]][None].float(), size=padded, mode="bilinear",
                              align_corners=False)[:, :, :crop_h, :crop_w]
        if (height, width) != image_size:  # the model's sem_seg_postprocess
            masks = F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)
        masks = masks[0]
        inside = (masks > 0).float()
        probabilities = masks.sigmoid()
        mask_scores = (probabilities * inside).flatten(1).sum(1) / (inside.flatten(1).sum(1) + 1e-6)
        for index, (label, class_score) in enumerate(zip(labels[chunk], class_scores[chunk])):
            score = class_score * mask_scores[index]
            if score < heads.threshold:
                continue
            if label == heads.human_class:
                if score <= PERSON_MIN_SCORE:
                    continue
                person_scores.append(float(score))
                person_masks.append(masks[index].numpy().copy())
            elif label < heads.num_parts:
                weighted = probabilities[index] * score
                hit = weighted > 0.5
                total[label] += weighted * hit  # adds exactly 0 where the model's torch.where keeps the sum
                pasted[label] += hit
    semantic = total / pasted.clamp_(min=1).float()
    order = np.argsort(person_scores)[::-1]
    return ParsingResult(semantic=semantic.numpy(), person_scores=[person_scores[i] for i in order],
                         person_masks=[person_masks[i] for i in order])
