"""pipeline.storage: filesystems, URIs, retries, model sync (local and moto S3)."""

from __future__ import annotations

import multiprocessing
import os

import pyarrow.fs as pafs
import pytest

from pipeline import storage as st

# ----------------------------------------------------------------------- config


def test_storage_config_rejects_credentials_without_echoing_them():
    with pytest.raises(st.StorageConfigError) as err:
        st.StorageConfig.from_mapping({"endpoint_url": "http://x:1", "aws_secret_access_key": "SECRET123"})
    assert "storage.aws_secret_access_key" in str(err.value)
    assert "SECRET123" not in str(err.value)


def test_storage_config_rejects_unknown_keys_and_userinfo_endpoints():
    with pytest.raises(st.StorageConfigError, match="storage.endpoint: unknown key; accepted keys:"):
        st.StorageConfig.from_mapping({"endpoint": "http://x"})
    with pytest.raises(st.StorageConfigError, match="embedded"):
        st.StorageConfig(endpoint_url="http://user:pw@host:9000")
    with pytest.raises(st.StorageConfigError, match="http or https"):
        st.StorageConfig(endpoint_url="ftp://host")


def test_s3_settings_come_from_config_then_env(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.0.0.1:9000")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    env = st.resolved_s3_settings(None)
    assert env["endpoint_url"] == "http://10.0.0.1:9000" and env["region"] == "eu-west-1"
    explicit = st.resolved_s3_settings({"endpoint_url": "https://s3.example.com", "region": "us-west-2"})
    assert explicit["endpoint_url"] == "https://s3.example.com" and explicit["region"] == "us-west-2"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://10.0.0.2:9000")  # service-specific wins
    assert st.resolved_s3_settings(None)["endpoint_url"] == "http://10.0.0.2:9000"


def test_filesystem_for_builds_explicit_s3_filesystem(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    fs, path = st.filesystem_for("s3://bkt/a/b.png", {"endpoint_url": "http://127.0.0.1:9"})
    assert isinstance(fs, pafs.S3FileSystem)
    assert path == "bkt/a/b.png"
    assert fs.region == "us-east-1"
    local, lpath = st.filesystem_for("file:///tmp/x/../y.txt")
    assert isinstance(local, pafs.LocalFileSystem) and lpath == "/tmp/y.txt"
    with pytest.raises(ValueError, match="unsupported URI scheme"):
        st.filesystem_for("gs://bucket/x")


def test_uri_helpers():
    assert st.parent_uri("s3://b/dir/m.jsonl") == "s3://b/dir"
    assert st.resolve_uri("imgs/a.png", "s3://b/dir") == "s3://b/dir/imgs/a.png"
    assert st.resolve_uri("../x.png", "s3://b/dir/sub") == "s3://b/dir/x.png"
    assert st.resolve_uri("s3://other/k.png", "s3://b/dir") == "s3://other/k.png"
    assert st.resolve_uri("/abs/a.png", "s3://b/dir") == "/abs/a.png"
    assert st.resolve_uri("a.png", "/data/set") == "/data/set/a.png"
    assert st.resolve_uri("file:///d/a.png", "/data") == "/d/a.png"


# ---------------------------------------------------------------------- retries


@pytest.mark.parametrize(
    "exc,transient",
    [
        (OSError("AWS Error SLOW_DOWN during GetObject operation: Please reduce your request rate."), True),
        (OSError("AWS Error UNKNOWN (HTTP status 503) during GetObject operation"), True),
        (OSError("curlCode: 28, Timeout was reached"), True),
        (OSError("AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7"), True),
        (TimeoutError("read timed out"), True),
        (FileNotFoundError("Path does not exist 'b/k'"), False),
        (OSError("AWS Error ACCESS_DENIED during GetObject operation (HTTP status 403)"), False),
        (OSError("AWS Error NO_SUCH_KEY during GetObject"), False),
        (ValueError("timeout"), False),  # not an I/O error at all
    ],
)
def test_is_transient(exc, transient):
    assert st.is_transient(exc) is transient


def test_with_retries_backs_off_then_succeeds():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("AWS Error SLOW_DOWN (HTTP status 503)")
        return "ok"

    assert st.with_retries(flaky, attempts=4, base_delay_s=1.0, sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0  # exponential with jitter


def test_with_retries_does_not_retry_not_found_and_gives_up():
    calls = []

    def missing():
        calls.append(1)
        raise FileNotFoundError("nope")

    with pytest.raises(FileNotFoundError):
        st.with_retries(missing, attempts=5, sleep=lambda s: None)
    assert len(calls) == 1

    def always_slow():
        calls.append(1)
        raise OSError("503 Service Unavailable")

    calls.clear()
    with pytest.raises(OSError, match="503"):
        st.with_retries(always_slow, attempts=3, sleep=lambda s: None)
    assert len(calls) == 3


class _FlakyHandler(pafs.FileSystemHandler):
    """Delegates to a real filesystem but fails the first ``fail`` reads with SlowDown."""

    def __init__(self, inner: pafs.FileSystem, fail: int):
        self.inner, self.fail, self.reads = inner, fail, 0

    def open_input_stream(self, path):
        self.reads += 1
        if self.reads <= self.fail:
            raise OSError("AWS Error SLOW_DOWN during GetObject operation: Please reduce your request rate. (503)")
        return self.inner.open_input_stream(path)

    def get_file_info(self, paths):
        return self.inner.get_file_info(paths)

    def get_type_name(self):
        return "flaky"

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    # unused abstract methods
    def get_file_info_selector(self, selector):
        return self.inner.get_file_info(selector)

    def create_dir(self, path, recursive):
        raise NotImplementedError

    def delete_dir(self, path):
        raise NotImplementedError

    def delete_dir_contents(self, path, missing_dir_ok=False):
        raise NotImplementedError

    def delete_root_dir_contents(self):
        raise NotImplementedError

    def delete_file(self, path):
        raise NotImplementedError

    def move(self, src, dest):
        raise NotImplementedError

    def copy_file(self, src, dest):
        raise NotImplementedError

    def open_input_file(self, path):
        raise NotImplementedError

    def open_output_stream(self, path, metadata):
        raise NotImplementedError

    def open_append_stream(self, path, metadata):
        raise NotImplementedError

    def normalize_path(self, path):
        return path


def test_read_bytes_retries_transient_s3_errors(moto_s3, s3_prefix, monkeypatch):
    uri = f"{s3_prefix}/retry.bin"
    st.write_bytes(uri, b"payload")
    real_fs, _ = st.filesystem_for(uri)
    handler = _FlakyHandler(real_fs, fail=2)
    flaky_fs = pafs.PyFileSystem(handler)
    monkeypatch.setattr(st, "filesystem_for", lambda u, s=None: (flaky_fs, u[len("s3://"):]))
    assert st.read_bytes(uri, {"retry_base_delay_s": 0.001}) == b"payload"
    assert handler.reads == 3
    handler.reads, handler.fail = 0, 10
    with pytest.raises(OSError, match="SLOW_DOWN"):
        st.read_bytes(uri, {"retries": 2, "retry_base_delay_s": 0.001})
    assert handler.reads == 2


# ---------------------------------------------------------------- local helpers


def test_local_read_write_exists_list(tmp_path):
    uri = str(tmp_path / "a" / "b" / "x.bin")
    assert not st.exists(uri)
    st.write_bytes(uri, b"123")
    assert st.read_bytes(uri) == b"123"
    assert st.exists(uri) and st.exists(str(tmp_path / "a"))
    st.write_bytes(str(tmp_path / "a" / "y.txt"), b"")
    assert st.list_uris(str(tmp_path / "a")) == [str(tmp_path / "a" / "b" / "x.bin"), str(tmp_path / "a" / "y.txt")]
    assert st.list_uris(str(tmp_path / "a"), suffix=".txt") == [str(tmp_path / "a" / "y.txt")]
    assert st.list_uris(str(tmp_path / "missing")) == []
    assert not [p for p in os.listdir(tmp_path / "a") if ".tmp-" in p]  # no temp leftovers
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(uri).st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would make it
    with pytest.raises(FileNotFoundError):
        st.read_bytes(str(tmp_path / "nope.bin"))


# ------------------------------------------------------------------------- S3


def test_s3_read_write_exists_list(moto_s3, s3_prefix):
    st.write_bytes(f"{s3_prefix}/d/one.txt", b"1")
    st.write_bytes(f"{s3_prefix}/d/sub/two.txt", b"22")
    st.write_bytes(f"{s3_prefix}/other.bin", b"x")
    assert st.read_bytes(f"{s3_prefix}/d/sub/two.txt") == b"22"
    assert st.exists(f"{s3_prefix}/d/one.txt")
    assert not st.exists(f"{s3_prefix}/d/none.txt")
    assert st.list_uris(f"{s3_prefix}/d") == [f"{s3_prefix}/d/one.txt", f"{s3_prefix}/d/sub/two.txt"]
    assert st.list_uris(f"{s3_prefix}/d", suffix="two.txt") == [f"{s3_prefix}/d/sub/two.txt"]
    # the object really is in moto (seen through boto3, not only through pyarrow)
    key = f"{s3_prefix}/d/one.txt"[len(f"s3://{moto_s3.bucket}/"):]
    assert moto_s3.client().get_object(Bucket=moto_s3.bucket, Key=key)["Body"].read() == b"1"
    with pytest.raises(FileNotFoundError):
        st.read_bytes(f"{s3_prefix}/d/none.txt")


def test_s3_explicit_endpoint_in_config(moto_s3, s3_prefix, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the config alone must be enough
    cfg = {"endpoint_url": moto_s3.endpoint, "region": "us-east-1"}
    st.write_bytes(f"{s3_prefix}/cfg.txt", b"via-config", cfg)
    assert st.read_bytes(f"{s3_prefix}/cfg.txt", cfg) == b"via-config"


def _upload_model(prefix: str) -> dict[str, bytes]:
    files = {
        "model_index.json": b'{"_class_name": "X"}',
        "transformer/config.json": b"{}",
        "transformer/diffusion_pytorch_model.safetensors": os.urandom(3000),
    }
    for rel, data in files.items():
        st.write_bytes(f"{prefix}/{rel}", data)
    return files


def test_sync_prefix_to_local_is_complete_and_idempotent(moto_s3, s3_prefix, tmp_path, monkeypatch):
    files = _upload_model(f"{s3_prefix}/flux")
    local = st.sync_prefix_to_local(f"{s3_prefix}/flux/", str(tmp_path / "cache"))
    for rel, data in files.items():
        assert open(os.path.join(local, rel), "rb").read() == data
    assert os.path.exists(os.path.join(local, st.SYNC_MARKER))
    assert not [p for p in os.listdir(tmp_path / "cache") if ".tmp-" in p]

    # second call: no S3 access at all
    def boom(*a, **k):
        raise AssertionError("should not touch S3 again")

    monkeypatch.setattr(st, "filesystem_for", lambda uri, s=None: (boom, uri))
    monkeypatch.setattr(st, "_copy_to_local", boom)
    assert st.sync_prefix_to_local(f"{s3_prefix}/flux", str(tmp_path / "cache")) == local


def test_sync_missing_prefix_raises_and_leaves_nothing(moto_s3, s3_prefix, tmp_path):
    with pytest.raises(FileNotFoundError, match="no objects"):
        st.sync_prefix_to_local(f"{s3_prefix}/absent", str(tmp_path / "cache"))
    assert [p for p in os.listdir(tmp_path / "cache") if not p.endswith(".lock")] == []


def _sync_in_child(prefix: str, cache: str, queue) -> None:
    queue.put(st.sync_prefix_to_local(prefix, cache))


def test_sync_two_processes_race(moto_s3, s3_prefix, tmp_path):
    files = _upload_model(f"{s3_prefix}/qwen")
    cache = str(tmp_path / "cache")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_sync_in_child, args=(f"{s3_prefix}/qwen", cache, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = {queue.get(timeout=5), queue.get(timeout=5)}
    assert len(results) == 1
    (local,) = results
    assert sorted(os.listdir(cache)) == sorted([os.path.basename(local), f".{os.path.basename(local)}.lock"])
    for rel, data in files.items():
        assert open(os.path.join(local, rel), "rb").read() == data


def test_localize_model_path(tmp_path, moto_s3, s3_prefix):
    assert st.localize_model_path(str(tmp_path), str(tmp_path / "c")) == str(tmp_path)
    _upload_model(f"{s3_prefix}/m")
    local = st.localize_model_path(f"{s3_prefix}/m", str(tmp_path / "c"))
    assert local.startswith(str(tmp_path / "c")) and os.path.isfile(os.path.join(local, "model_index.json"))
