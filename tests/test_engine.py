"""The M2FP engine on the tiny synthetic model, through modelscope's real code."""
import json

import numpy as np
import pytest

from common.labels import CIHP_CLASSES
from scripts.imagegen import photo
from worker.synthetic import SIZES, configuration


def test_synthetic_model_is_in_modelscope_format(tiny_model):
    config = json.loads((tiny_model / "configuration.json").read_text())
    assert config["model"]["type"] == "m2fp" and config["pipeline"]["type"] == "m2fp-image-human-parsing"
    import torch

    checkpoint = torch.load(tiny_model / "pytorch_model.pt", map_location="cpu")
    assert set(checkpoint) == {"model"} and any(k.startswith("backbone.") for k in checkpoint["model"])


def test_full_configuration_matches_the_official_cihp_r101():
    model = configuration("full")["model"]
    assert model["backbone"]["depth"] == 101 and model["backbone"]["stem_out_channels"] == 128
    assert model["encoder"]["transformer_enc_layers"] == 6 and model["encoder"]["conv_dim"] == 256
    assert model["decoder"]["num_queries"] == 100 and model["decoder"]["dec_layers"] == 9
    assert model["classes"][:20] == list(CIHP_CLASSES) and model["classes"][20] == "Human"
    assert SIZES["full"]["hidden"] == 256


@pytest.mark.parametrize("engine_name", ["tiny_engine", "fast_engine"])
def test_synthetic_weights_parse_any_photo_into_parts_and_persons(request, engine_name):
    engine = request.getfixturevalue(engine_name)
    for seed, (w, h) in enumerate([(320, 240), (150, 400), (97, 61)]):
        parsing = engine.parse(photo(w, h, seed))
        assert parsing.labels.dtype == np.uint8
        assert parsing.labels.shape == (h, w) and parsing.decision_size == (w, h)  # decided at the photo's size
        assert parsing.semantic.shape == (20, h, w)
        assert max(parsing.size) <= 320
        parts = set(np.unique(parsing.labels).tolist()) - {0}
        assert len(parts) >= 3, parts
        assert parsing.person_count >= 1 and parsing.person_threshold == 0.5
        scores = [p.score for p in parsing.persons]
        assert scores == sorted(scores, reverse=True) and min(scores) >= 0.5
        assert all(p.mask_logits.shape == parsing.labels.shape for p in parsing.persons)
        assert set(parsing.class_scores) == set(np.unique(parsing.labels).tolist())
        assert all(0 <= s <= 1 for s in parsing.class_scores.values())
    assert engine.description["engine"] == {"tiny_engine": "torch", "fast_engine": "openvino"}[engine_name]


def test_stock_pipeline_runs_on_the_same_model(tiny_engine):
    output = tiny_engine.parse_stock(photo(120, 90))
    assert len(output["labels"]) == len(output["masks"]) > 0
    assert output["masks"][0].shape == (90, 120)  # stock masks come back at the original size
    assert "Human" in output["labels"]
