"""The postprocess's person rule, from hand-made logits: a human instance is kept when its
score (class probability x mask score) reaches the model's threshold and is above M2FP's
hard floor of 0.1; the kept ones come best first."""
import numpy as np
import pytest
import torch

from worker.postprocess import PERSON_MIN_SCORE, ModelHeads, parse_logits

HUMAN = 20  # CIHP's 20 parts (background included), then the human class, then "no object"
SIDE = 16  # the padded image; mask logits come at a quarter of it


def humans(*probabilities: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One query per probability: the human class with that probability, "no object" with
    the rest, and a mask covering the whole image with a sigmoid of 1 (so its mask score
    is 1 and its score is the probability itself)."""
    class_logits = torch.full((len(probabilities), HUMAN + 2), -1e4)
    for query, probability in enumerate(probabilities):
        class_logits[query, HUMAN] = float(np.log(probability))
        class_logits[query, HUMAN + 1] = float(np.log(1 - probability))
    mask_logits = torch.full((len(probabilities), SIDE // 4, SIDE // 4), 20.0)
    return class_logits, mask_logits


def kept(threshold: float, *probabilities: float) -> list[float]:
    heads = ModelHeads(num_parts=HUMAN, human_class=HUMAN, threshold=threshold)
    result = parse_logits(*humans(*probabilities), (SIDE, SIDE), heads)
    assert len(result.person_masks) == len(result.person_scores)
    assert all(mask.shape == (SIDE, SIDE) and (mask > 0).all() for mask in result.person_masks)
    return result.person_scores


def test_a_person_just_below_the_threshold_is_dropped_one_at_it_kept():
    scores = kept(0.5, 0.499, 0.5, 0.8)
    assert scores == pytest.approx([0.8, 0.5], abs=1e-6)  # best first; 0.499 is not a person


def test_below_the_floor_nobody_is_a_person_whatever_the_threshold_says():
    assert PERSON_MIN_SCORE == 0.1
    # A threshold below M2FP's floor: 0.099 reaches the threshold but not the floor.
    scores = kept(0.05, 0.04, 0.099, 0.101)
    assert scores == pytest.approx([0.101], abs=1e-6)
