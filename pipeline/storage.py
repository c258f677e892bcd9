"""The one place that turns a URI into a filesystem, plus small I/O helpers.

Why one place: a bare ``pyarrow.fs.S3FileSystem()`` ignores ``AWS_ENDPOINT_URL``
(it did not reach a local moto endpoint), while boto3 and ``FileSystem.from_uri``
honour it.  Building every S3 filesystem here, explicitly, from the run config
or the standard environment variables keeps all readers and writers on the same
endpoint.  Credentials are never passed in: pyarrow and boto3 use the standard
AWS credential chain (env vars, ~/.aws, instance profile).

URIs are either ``s3://bucket/key`` or local paths (``file://`` accepted).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import posixpath
import random
import re
import shutil
import tempfile
import time
import uuid
from typing import Annotated, Any, Callable, Mapping, TypeVar
from urllib.parse import urlparse

import pyarrow.fs as pafs
from pydantic import Field, ValidationError, field_validator

from pipeline.validation import Section, describe

T = TypeVar("T")

SYNC_MARKER = ".dropedit-sync-complete"

# Keys that would carry secrets; rejected wherever a storage section is parsed.
CREDENTIAL_KEYS = frozenset(
    {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "access_key",
        "access_key_id",
        "secret_key",
        "secret_access_key",
        "session_token",
        "credentials",
        "password",
        "token",
    }
)


class StorageConfigError(ValueError):
    """A storage section that cannot be used (unknown key, credentials, bad URL)."""


class StorageConfig(Section):
    """Where S3 lives.  Every field falls back to the standard AWS env vars."""

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:5000; else AWS_ENDPOINT_URL(_S3)
    region: str | None = None  # else AWS_REGION / AWS_DEFAULT_REGION
    connect_timeout_s: float | None = None
    request_timeout_s: float | None = None
    retries: Annotated[int, Field(ge=1)] = 4  # attempts of our own retry loop (on top of the SDK's)
    retry_base_delay_s: float = 0.25
    # testing and `dropedit simulate` only: the fraction of write attempts that fail with a transient error
    # before touching storage (the retry loop must absorb them)
    inject_write_faults: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0

    def __init__(self, **data: Any) -> None:
        # A StorageConfigError with readable lines, built directly or as a run config's section (pydantic
        # calls a custom __init__ for nested models too; pipeline.validation keeps the lines as they are).
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise StorageConfigError(describe(exc, StorageConfig, "storage")) from None

    @field_validator("endpoint_url")
    @classmethod
    def _valid_endpoint(cls, endpoint_url: str | None) -> str | None:
        if endpoint_url:
            _split_endpoint(endpoint_url)  # validates early, with a clear message
        return endpoint_url

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "StorageConfig":
        """Build from a config section; credentials and unknown keys are errors."""
        if data is None:
            return cls()
        if isinstance(data, StorageConfig):
            return data
        if not isinstance(data, Mapping):
            raise StorageConfigError(f"storage must be a mapping, got {type(data).__name__}")
        secret = sorted(k for k in data if str(k).lower() in CREDENTIAL_KEYS)
        if secret:
            # Never echo the value: it may be a real secret.
            raise StorageConfigError(
                f"storage.{secret[0]}: credentials must not be in the config; use the "
                "standard AWS credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY env "
                "vars, ~/.aws/credentials, or an instance profile)"
            )
        return cls(**{str(k): v for k, v in data.items()})


StorageLike = StorageConfig | Mapping[str, Any] | None


def as_storage_config(storage: StorageLike) -> StorageConfig:
    return StorageConfig.from_mapping(storage)


# --------------------------------------------------------------------------- URIs


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def is_remote_or_absolute(uri: str) -> bool:
    return "://" in uri or os.path.isabs(os.path.expanduser(uri))


def parent_uri(uri: str) -> str:
    """Directory part of a URI (``s3://b/a/m.jsonl`` -> ``s3://b/a``)."""
    if is_s3(uri):
        return "s3://" + posixpath.dirname(uri[len("s3://") :].rstrip("/"))
    return os.path.dirname(os.path.abspath(_strip_file_scheme(uri)))


def join_uri(base: str, *parts: str) -> str:
    """Join path parts onto a base URI, normalising ``..`` inside the key."""
    if is_s3(base):
        key = posixpath.normpath(posixpath.join(base[len("s3://") :], *parts))
        return "s3://" + key
    return os.path.normpath(os.path.join(_strip_file_scheme(base), *parts))


def resolve_uri(ref: str, base_dir: str) -> str:
    """Resolve a manifest entry: absolute / ``scheme://`` refs stay, others join ``base_dir``."""
    if ref.startswith("file://"):
        return _strip_file_scheme(ref)
    if is_remote_or_absolute(ref):
        return os.path.expanduser(ref) if "://" not in ref else ref
    return join_uri(base_dir, ref)


def _strip_file_scheme(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else os.path.expanduser(uri)


def _split_endpoint(endpoint_url: str) -> tuple[str, str]:
    """``http://host:port`` -> (``host:port``, ``http``); userinfo in the URL is refused."""
    parsed = urlparse(endpoint_url if "://" in endpoint_url else "https://" + endpoint_url)
    if parsed.scheme not in ("http", "https"):
        raise StorageConfigError(
            f"storage.endpoint_url: scheme must be http or https, got {parsed.scheme!r}"
        )
    if parsed.username or parsed.password:
        raise StorageConfigError(
            "storage.endpoint_url: credentials must not be embedded in the endpoint URL"
        )
    if not parsed.hostname:
        raise StorageConfigError(f"storage.endpoint_url: no host in {endpoint_url!r}")
    netloc = parsed.hostname + (f":{parsed.port}" if parsed.port else "")
    return netloc, parsed.scheme


# -------------------------------------------------------------------- filesystems


def resolved_s3_settings(storage: StorageLike = None) -> dict[str, Any]:
    """Endpoint/region after applying env fallbacks (what ``filesystem_for`` will use)."""
    cfg = as_storage_config(storage)
    endpoint = (
        cfg.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )
    region = cfg.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return {
        "endpoint_url": endpoint,
        "region": region or None,
        "connect_timeout_s": cfg.connect_timeout_s,
        "request_timeout_s": cfg.request_timeout_s,
    }


@functools.lru_cache(maxsize=32)
def _s3_filesystem(
    endpoint_url: str | None,
    region: str | None,
    connect_timeout_s: float | None,
    request_timeout_s: float | None,
) -> pafs.S3FileSystem:
    # Cached per settings: an S3FileSystem holds a connection pool worth reusing.
    kwargs: dict[str, Any] = {}
    if endpoint_url:
        netloc, scheme = _split_endpoint(endpoint_url)
        kwargs.update(endpoint_override=netloc, scheme=scheme)
    if region:
        kwargs["region"] = region
    if connect_timeout_s is not None:
        kwargs["connect_timeout"] = float(connect_timeout_s)
    if request_timeout_s is not None:
        kwargs["request_timeout"] = float(request_timeout_s)
    return pafs.S3FileSystem(**kwargs)


def filesystem_for(uri: str, storage: StorageLike = None) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, path_within_it)`` for a local path or an ``s3://`` URI."""
    if is_s3(uri):
        settings = resolved_s3_settings(storage)
        if settings["region"] is None and settings["endpoint_url"] is None:
            settings["region"] = _bucket_region(uri[len("s3://") :].split("/", 1)[0])
        fs = _s3_filesystem(
            settings["endpoint_url"],
            settings["region"],
            settings["connect_timeout_s"],
            settings["request_timeout_s"],
        )
        return fs, uri[len("s3://") :].rstrip("/")
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported URI scheme in {uri!r}; use s3:// or a local path")
    return pafs.LocalFileSystem(), os.path.abspath(_strip_file_scheme(uri))


@functools.lru_cache(maxsize=64)
def _bucket_region(bucket: str) -> str | None:
    # Real AWS without a configured region: ask S3 once per bucket (as from_uri does).
    try:
        return pafs.resolve_s3_region(bucket)
    except OSError:
        return None


def _to_uri(fs: pafs.FileSystem, path: str) -> str:
    return "s3://" + path if isinstance(fs, pafs.S3FileSystem) else path


# ------------------------------------------------------------------------ retries

_PERMANENT = re.compile(
    r"NO_SUCH_(KEY|BUCKET)|RESOURCE_NOT_FOUND|ACCESS_DENIED|INVALID_ACCESS_KEY|"
    r"SIGNATURE_DOES_NOT_MATCH|\bHTTP status 40[0134]\b|AccessDenied|NoSuchKey|NoSuchBucket",
    re.IGNORECASE,
)
_TRANSIENT = re.compile(
    r"SLOW_DOWN|SlowDown|THROTTL|REQUEST_TIMEOUT|RequestTimeout|timed? ?out|Timeout was reached|"
    r"SERVICE_UNAVAILABLE|Service ?Unavailable|INTERNAL_FAILURE|InternalError|"
    r"NETWORK_CONNECTION|Connection reset|Broken pipe|curlCode: (6|7|28|35|52|55|56)\b|"
    r"\bHTTP status 5\d\d\b|\b50[0234]\b",
    re.IGNORECASE,
)


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying (timeouts, 5xx, SlowDown); never for NotFound/denied."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if not isinstance(exc, OSError):
        return False
    text = str(exc)
    if _PERMANENT.search(text):
        return False
    return bool(_TRANSIENT.search(text))


def with_retries(
    fn: Callable[[], T],
    *,
    attempts: int = 4,
    base_delay_s: float = 0.25,
    max_delay_s: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` retrying transient errors with exponential backoff and jitter."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            if attempt >= attempts or not is_transient(exc):
                raise
            delay = min(max_delay_s, base_delay_s * 2 ** (attempt - 1))
            sleep(delay * (0.5 + random.random() / 2))  # jitter de-synchronises workers
    raise AssertionError("unreachable")


def _retrying(storage: StorageLike, fn: Callable[[], T]) -> T:
    cfg = as_storage_config(storage)
    return with_retries(fn, attempts=cfg.retries, base_delay_s=cfg.retry_base_delay_s)


# ------------------------------------------------------------------------ helpers


def read_bytes(uri: str, storage: StorageLike = None) -> bytes:
    """Whole object/file as bytes; FileNotFoundError when missing."""
    fs, path = filesystem_for(uri, storage)

    def _read() -> bytes:
        with fs.open_input_stream(path) as f:
            return f.read()

    return _retrying(storage, _read)


def write_bytes(uri: str, data: bytes, storage: StorageLike = None) -> None:
    """Write a whole object/file (local writes go through a temp file + rename); transient errors retried."""
    fs, path = filesystem_for(uri, storage)
    fault_rate = as_storage_config(storage).inject_write_faults

    def _write() -> None:
        if fault_rate and random.random() < fault_rate:
            raise ConnectionError(f"injected transient write fault (storage.inject_write_faults={fault_rate})")
        if isinstance(fs, pafs.LocalFileSystem):
            _write_local(path, data)
            return
        with fs.open_output_stream(path) as f:
            f.write(data)

    _retrying(storage, _write)


def _write_local(path: str, data: bytes) -> None:
    # Atomic on one filesystem: readers never see a half-written file.  A plain open() (not mkstemp, which
    # makes 0600 files) keeps the usual umask permissions.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def exists(uri: str, storage: StorageLike = None) -> bool:
    """True if a file/object (or a directory/prefix) exists at ``uri``."""
    fs, path = filesystem_for(uri, storage)
    info = _retrying(storage, lambda: fs.get_file_info(path))
    return info.type != pafs.FileType.NotFound


def list_uris(prefix: str, storage: StorageLike = None, suffix: str | None = None) -> list[str]:
    """Files (not directories) under a prefix, recursively, as sorted URIs."""
    fs, path = filesystem_for(prefix, storage)
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    infos = _retrying(storage, lambda: fs.get_file_info(selector))
    out = [
        _to_uri(fs, i.path)
        for i in infos
        if i.type == pafs.FileType.File and (suffix is None or i.path.endswith(suffix))
    ]
    return sorted(out)


# ------------------------------------------------------------------- model sync


def sync_prefix_to_local(prefix: str, cache_dir: str, storage: StorageLike = None) -> str:
    """Copy every object under ``prefix`` into ``cache_dir`` once; return the local dir.

    Idempotent: a complete copy carries a marker file and is reused.  Atomic: files
    land in a temp dir that is renamed into place only when complete, so a crash
    never leaves a half copy that looks finished.  Race-safe: an ``flock`` per
    destination makes a second process on the node wait and then reuse the copy
    instead of downloading the same model twice.
    """
    fs, root = filesystem_for(prefix, storage)
    root = root.rstrip("/")
    digest = hashlib.sha1(prefix.rstrip("/").encode()).hexdigest()[:10]
    name = f"{re.sub(r'[^A-Za-z0-9._-]+', '_', posixpath.basename(root)) or 'root'}-{digest}"
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
    dest = os.path.join(cache_dir, name)
    if os.path.exists(os.path.join(dest, SYNC_MARKER)):
        return dest
    os.makedirs(cache_dir, exist_ok=True)
    with open(os.path.join(cache_dir, f".{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if os.path.exists(os.path.join(dest, SYNC_MARKER)):
            return dest  # another process finished while we waited
        selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
        infos = _retrying(storage, lambda: fs.get_file_info(selector))
        files = [i for i in infos if i.type == pafs.FileType.File]
        if not files:
            raise FileNotFoundError(f"no objects under {prefix}")
        tmp = tempfile.mkdtemp(dir=cache_dir, prefix=f".{name}.tmp-")
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the cache may be shared by the node's users
        try:
            total = 0
            for info in files:
                rel = info.path[len(root) :].lstrip("/")
                local = os.path.join(tmp, *rel.split("/"))
                os.makedirs(os.path.dirname(local), exist_ok=True)
                _retrying(storage, functools.partial(_copy_to_local, fs, info.path, local))
                total += info.size or 0
            with open(os.path.join(tmp, SYNC_MARKER), "w") as f:
                json.dump({"source": prefix, "files": len(files), "bytes": total}, f)
            if os.path.exists(dest):  # leftover without a marker (e.g. hand-made): replace
                shutil.rmtree(dest)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def _copy_to_local(fs: pafs.FileSystem, path: str, local: str) -> None:
    with fs.open_input_stream(path) as src, open(local, "wb") as dst:
        while chunk := src.read(8 << 20):
            dst.write(chunk)


def localize_model_path(path: str, cache_dir: str, storage: StorageLike = None) -> str:
    """A local folder for ``from_pretrained``: local paths pass, ``s3://`` prefixes sync."""
    if is_s3(path):
        return sync_prefix_to_local(path, cache_dir, storage)
    return os.path.abspath(_strip_file_scheme(path))


def safe_name(record_id: str) -> str:
    """A record id as one path component."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(record_id)) or "_"
