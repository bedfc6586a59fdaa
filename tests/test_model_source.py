"""Finding the model: a local directory, or the hub with a clear message when offline."""
import pytest

from common.settings import Settings
from worker.model_source import ModelUnavailable, resolve_model_dir


def test_local_model_directory_is_used_as_is(tiny_model, tmp_path):
    settings = Settings(m2fp_model=str(tiny_model), model_cache_dir=tmp_path)
    assert resolve_model_dir(settings) == tiny_model.resolve()


def test_directory_without_weights_names_what_is_missing(tmp_path):
    (tmp_path / "configuration.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match="lacks pytorch_model.pt"):
        resolve_model_dir(Settings(m2fp_model=str(tmp_path)))


def test_a_mistyped_local_directory_is_named_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "127.0.0.1:9")
    with pytest.raises(ModelUnavailable, match="M2FP_MODEL=models/m2fp-synthetic-tyni is not a directory") as raised:
        resolve_model_dir(Settings(m2fp_model="models/m2fp-synthetic-tyni", model_cache_dir=tmp_path / "cache"))
    assert "make synthetic-model" in str(raised.value) and "download" not in str(raised.value)


def test_offline_hub_download_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "127.0.0.1:9")  # nothing listens: offline
    settings = Settings(model_cache_dir=tmp_path / "cache")
    with pytest.raises(ModelUnavailable, match="Set M2FP_MODEL to a local model directory") as raised:
        resolve_model_dir(settings)
    assert "damo/cv_resnet101_image-multiple-human-parsing@v1.0.1" in str(raised.value)
