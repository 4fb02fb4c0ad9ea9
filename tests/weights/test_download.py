"""Downloading zoo weights from a local server (tests/weights_server.py): progress, resume by
Range, verification, bounds, the errors a person sees. Nothing here touches the internet."""

from __future__ import annotations

import hashlib
import os
import socket

import pytest

from retinacli.errors import CheckpointError, DownloadError, UsageError
from retinacli.weights import download as download_module
from retinacli.weights.download import cache_dir, download, partial_file
from retinacli.weights.zoo import SIZE_SLACK_BYTES

CONTENT = os.urandom(50_000)
DIGEST = hashlib.sha256(CONTENT).hexdigest()


def test_a_download_lands_in_torchs_hub_cache_verified_with_progress(zoo_env, monkeypatch):
    monkeypatch.setattr(download_module, "CHUNK_BYTES", 4096)
    entry = zoo_env.entry("test/good", CONTENT)
    calls = []
    fetched = download(entry, progress=lambda done, total: calls.append((done, total)))
    assert cache_dir() == zoo_env.cache  # TORCH_HOME/hub/checkpoints
    assert fetched.path == zoo_env.file(entry) and fetched.path.read_bytes() == CONTENT
    assert fetched.downloaded and fetched.sha256 == DIGEST and fetched.resumed_from == 0
    assert "match the published file" in fetched.check_text()
    # The mirror replaced scheme and host and kept the path; one request, for the whole file.
    assert fetched.url == f"{zoo_env.server.base_url}/models/test-good.pth"
    assert zoo_env.server.ranges() == [None]
    # 50000 bytes in 4096-byte reads: 0 first, then 13 steps up to the total, never backwards.
    assert calls[0] == (0, 50_000) and calls[-1] == (50_000, 50_000)
    assert len(calls) == 1 + 13 and all(a[0] <= b[0] for a, b in zip(calls, calls[1:], strict=False))
    assert not partial_file(fetched.path).exists()
    assert sorted(p.name for p in zoo_env.cache.iterdir()) == ["test-good.pth"]


def test_a_partial_file_is_resumed_with_a_range_request(zoo_env):
    entry = zoo_env.entry("test/resume", CONTENT)
    zoo_env.cache.mkdir(parents=True)
    partial_file(zoo_env.file(entry)).write_bytes(CONTENT[:20_000])
    fetched = download(entry)
    assert zoo_env.server.ranges() == ["bytes=20000-"]
    assert fetched.resumed_from == 20_000
    assert hashlib.sha256(fetched.path.read_bytes()).hexdigest() == DIGEST == fetched.sha256


def test_a_connection_dropped_half_way_is_resumed_in_the_same_call(zoo_env):
    entry = zoo_env.entry("test/drop", CONTENT)
    zoo_env.server.drop_next = 1  # the first answer stops after 25000 bytes
    fetched = download(entry)
    assert zoo_env.server.ranges() == [None, "bytes=25000-"]
    assert fetched.resumed_from == 25_000 and fetched.path.read_bytes() == CONTENT


def test_a_connection_that_keeps_breaking_keeps_the_partial_file_for_the_next_run(zoo_env):
    entry = zoo_env.entry("test/flaky", CONTENT)
    zoo_env.server.drop_next = 3  # every attempt of this call: 25000, then +12500, then +6250 bytes
    with pytest.raises(DownloadError) as caught:
        download(entry)
    partial = partial_file(zoo_env.file(entry))
    assert partial.stat().st_size == 25_000 + 12_500 + 6_250
    message = str(caught.value)
    assert "broke 3 times" in message and str(partial) in message and "continues from there" in message
    assert not zoo_env.file(entry).exists()
    fetched = download(entry)  # the server is well again: the next run continues
    assert zoo_env.server.ranges()[-1] == "bytes=43750-" and fetched.path.read_bytes() == CONTENT


def test_a_server_that_ignores_range_is_read_from_the_start(zoo_env):
    entry = zoo_env.entry("test/norange", CONTENT)
    zoo_env.cache.mkdir(parents=True)
    partial_file(zoo_env.file(entry)).write_bytes(b"x" * 20_000)  # would be wrong if appended to
    zoo_env.server.ignore_range = True
    fetched = download(entry)
    assert zoo_env.server.ranges() == ["bytes=20000-"]  # asked, answered 200 with the whole file
    assert fetched.resumed_from == 0 and fetched.path.read_bytes() == CONTENT


def test_a_hash_mismatch_deletes_the_file_and_says_so(zoo_env):
    entry = zoo_env.entry("test/corrupt", CONTENT)
    zoo_env.server.corrupt = True
    with pytest.raises(DownloadError) as caught:
        download(entry)
    message = str(caught.value)
    assert f"the published file's is {DIGEST}" in message and "it was deleted" in message
    assert str(zoo_env.file(entry)) in message  # where to put the right file by hand
    assert isinstance(caught.value, CheckpointError) and caught.value.exit_code == 2
    assert list(zoo_env.cache.iterdir()) == []  # neither the file nor a .partial


def test_a_published_prefix_is_checked_when_no_full_hash_is(zoo_env):
    entry = zoo_env.entry("test/prefix", CONTENT, verification="sha256_prefix", size_bytes=None, max_bytes=60_000)
    assert download(entry).check_text().endswith(f"starts with the published {DIGEST[:8]}")
    zoo_env.file(entry).unlink()
    zoo_env.server.corrupt = True
    with pytest.raises(DownloadError, match=f"does not start with the published prefix {DIGEST[:8]}"):
        download(entry)


def test_an_entry_without_a_published_hash_is_fetched_and_said_to_be_unverified(zoo_env):
    entry = zoo_env.entry("test/nohash", CONTENT, verification="none", size_bytes=None, max_bytes=60_000)
    fetched = download(entry)
    assert fetched.check_text() == f"not verified: no checksum of this file is published; its sha256 is {DIGEST}"


def test_404_names_the_url_and_the_path_to_put_the_file_at(zoo_env):
    entry = zoo_env.entry("test/missing", CONTENT)
    zoo_env.server.missing = True
    with pytest.raises(DownloadError) as caught:
        download(entry)
    message = str(caught.value)
    assert f"{zoo_env.server.base_url}/models/test-missing.pth" in message
    assert "HTTP 404 Not Found" in message
    assert f"download {entry.url} on a machine with internet access and put it at {zoo_env.file(entry)}" in message
    assert f"(sha256 {DIGEST})" in message


def test_offline_names_the_url_and_the_path(zoo_env, monkeypatch):
    entry = zoo_env.entry("test/offline", CONTENT)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RETINA_WEIGHTS_MIRROR", f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError) as caught:
        download(entry)
    assert f"cannot reach http://127.0.0.1:{port}/models/test-offline.pth (connection refused)" in str(caught.value)
    assert f"put it at {zoo_env.file(entry)}" in str(caught.value)


def test_a_verified_file_in_place_is_not_fetched_again_and_a_damaged_one_is(zoo_env):
    entry = zoo_env.entry("test/cached", CONTENT)
    download(entry)
    again = download(entry)
    assert not again.downloaded and again.sha256 == DIGEST and len(zoo_env.server.requests) == 1
    zoo_env.file(entry).write_bytes(CONTENT[:-1] + b"!")  # damaged in the cache
    repaired = download(entry)
    assert repaired.downloaded and repaired.path.read_bytes() == CONTENT
    assert "it was deleted and fetched again" in repaired.note and len(zoo_env.server.requests) == 2


def test_a_wrong_file_put_there_by_hand_is_named_when_it_cannot_be_fetched_again(zoo_env):
    entry = zoo_env.entry("test/byhand", CONTENT)
    zoo_env.cache.mkdir(parents=True)
    zoo_env.file(entry).write_bytes(b"not the weights")
    zoo_env.server.missing = True
    with pytest.raises(DownloadError) as caught:
        download(entry)
    message = str(caught.value)
    assert "HTTP 404 Not Found" in message
    assert message.endswith(
        f"(before that: the cached {zoo_env.file(entry)} has 15 bytes, but the published file has 50000; it was deleted)"
    )


def test_a_response_larger_than_the_published_file_is_refused_before_it_is_read(zoo_env):
    big = os.urandom(SIZE_SLACK_BYTES + 5_000)
    entry = zoo_env.entry("test/big", big, size_bytes=1_000)  # the server announces more
    with pytest.raises(DownloadError) as caught:
        download(entry)
    limit = 1_000 + SIZE_SLACK_BYTES
    announced = f"the server announces {len(big)} bytes, more than the {limit} the published file can have"
    assert announced in str(caught.value) and zoo_env.server.requests  # asked, then refused unread
    assert list(zoo_env.cache.iterdir()) == []


def test_a_body_without_length_is_cut_off_at_the_bound(zoo_env):
    big = os.urandom(SIZE_SLACK_BYTES + 5_000)
    entry = zoo_env.entry("test/endless", big, size_bytes=1_000)
    zoo_env.server.no_length = True
    with pytest.raises(DownloadError, match=f"sent more than the {1_000 + SIZE_SLACK_BYTES} bytes"):
        download(entry)
    assert list(zoo_env.cache.iterdir()) == []


def test_a_malformed_mirror_is_a_usage_error(zoo_env, monkeypatch):
    monkeypatch.setenv("RETINA_WEIGHTS_MIRROR", "file:///etc")
    with pytest.raises(UsageError, match="RETINA_WEIGHTS_MIRROR='file:///etc': not an http"):
        download(zoo_env.entry("test/mirror", CONTENT))
