"""The storage contract, run against both backends (local directory, S3 endpoint)."""
import pytest
import requests

from m2fp_contract.errors import ObjectNotFound, StorageUnavailable
from common.settings import Settings
from common.storage import LocalStore, S3Store, check_key, create_storage


def test_put_get_overwrite_delete(store):
    store.put("jobs/abc/colored.png", b"first", "image/png")
    assert store.get("jobs/abc/colored.png") == b"first"
    store.put("jobs/abc/colored.png", b"second", "image/png")  # a rerun overwrites
    assert store.get("jobs/abc/colored.png") == b"second"
    store.delete("jobs/abc/colored.png")
    with pytest.raises(ObjectNotFound):
        store.get("jobs/abc/colored.png")
    store.ping()


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "jobs/../x", "jobs/a b", "jobs//x", "", "jobs/x\n"])
def test_unsafe_keys_are_refused(store, key):
    with pytest.raises(ValueError):
        store.put(key, b"x", "text/plain")
    with pytest.raises(ValueError):
        check_key(key)


def test_local_store_never_writes_outside_its_root(tmp_path):
    store = LocalStore(tmp_path / "root")
    store.put("jobs/j1/input", b"data", "application/octet-stream")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "root/jobs/j1/input"]
    assert store.presigned_url("jobs/j1/input", 60) is None


def test_s3_presigned_url_downloads_the_object(s3_store):
    s3_store.put("jobs/p/colored.png", b"png-bytes", "image/png")
    url = s3_store.presigned_url("jobs/p/colored.png", 60)
    response = requests.get(url, timeout=10)
    assert response.status_code == 200 and response.content == b"png-bytes"
    assert response.headers["Content-Type"] == "image/png"


def test_s3_presigned_url_names_the_public_endpoint(s3_endpoint):
    store = S3Store(s3_endpoint, "k", "secret-key", "bucket", public_endpoint="https://media.example.org")
    assert store.presigned_url("jobs/x/colored.png", 60).startswith("https://media.example.org/bucket/jobs/x/colored.png?")


def test_missing_bucket_and_dead_endpoint_are_unavailable(s3_endpoint):
    with pytest.raises(StorageUnavailable, match="does not exist"):
        S3Store(s3_endpoint, "k", "secret-key", "no-such-bucket").ping()
    dead = S3Store("http://127.0.0.1:9", "k", "secret-key", "bucket")
    with pytest.raises(StorageUnavailable):
        dead.ping()
    with pytest.raises(StorageUnavailable):
        dead.put("jobs/x/input", b"x", "application/octet-stream")


def test_backend_is_chosen_by_configuration(tmp_path, s3_endpoint):
    assert isinstance(create_storage(Settings(local_store_dir=tmp_path)), LocalStore)
    s3 = Settings(s3_endpoint=s3_endpoint, s3_access_key="k", s3_secret_key="secret-key")
    assert s3.storage_backend == "s3" and isinstance(create_storage(s3), S3Store)
    with pytest.raises(ValueError, match="S3_ACCESS_KEY"):
        Settings(storage_backend="s3", s3_endpoint=s3_endpoint)
