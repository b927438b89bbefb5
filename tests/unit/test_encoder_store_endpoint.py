"""The S3 client of a job that names its own endpoint connects only where the installation allows
(upload.limit_connections): each connection is checked, also through an outbound proxy."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError, ProxyConnectionError
from urllib3.util import connection

from onair.addresses import AddressPolicy
from onair.encoder.upload import S3Store, storage_problem
from onair.phases import ConditionReason
from onair.urls import plain_origin, same_origin

CREDENTIALS = {"aws_access_key_id": "k", "aws_secret_access_key": "s"}


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Where the S3 client connects (refused at once: these tests need no store)."""
    made: list[tuple[str, int]] = []

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        made.append(address)
        raise ConnectionRefusedError("nothing listens here")

    monkeypatch.setattr(connection, "create_connection", create_connection)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return made


def put(store: S3Store) -> EndpointConnectionError | ProxyConnectionError:
    with pytest.raises((EndpointConnectionError, ProxyConnectionError)) as failed:
        store.put("k", b"x", "text/plain", "no-cache")
    return failed.value


@pytest.mark.parametrize(("endpoint", "said"), [
    ("http://localhost:9", "localhost resolves to no public address"),
    ("http://10.0.0.5:9000", "10.0.0.5 is no public address"),
    ("https://[::ffff:169.254.169.254]", "::ffff:169.254.169.254 is no public address"),
])
def test_a_connection_to_an_address_not_allowed_is_never_made_and_the_status_says_why(
        connections: list[tuple[str, int]], endpoint: str, said: str) -> None:
    error = put(S3Store(endpoint, "media", "us-east-1", policy=AddressPolicy(), **CREDENTIALS))
    assert connections == []
    reason, message = storage_problem(error, "media")
    assert reason == ConditionReason.BUCKET_UNREACHABLE
    assert said in message and "encoder.storageAllowedNetworks" in message, message


def test_an_allowed_network_is_connected_to_at_the_address_checked(connections: list[tuple[str, int]]) -> None:
    put(S3Store("http://localhost:9", "media", "us-east-1", policy=AddressPolicy.allowing(["127.0.0.0/8"]),
                **CREDENTIALS))
    assert connections and all(address == ("127.0.0.1", 9) for address in connections)


def test_through_a_proxy_the_tunnel_s_target_is_checked_and_forwarding_refused(
        connections: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    tunnelled = put(S3Store("https://10.0.0.5:9000", "media", "us-east-1", policy=AddressPolicy(), **CREDENTIALS))
    assert "10.0.0.5 is no public address" in storage_problem(tunnelled, "media")[1]
    forwarded = put(S3Store("http://s3.example.com", "media", "us-east-1", policy=AddressPolicy(), **CREDENTIALS))
    assert "forwarding proxy" in storage_problem(forwarded, "media")[1]
    assert connections == []  # the proxy was not asked for either
    allowed = S3Store("https://10.0.0.5:9000", "media", "us-east-1", policy=AddressPolicy.allowing(["10.0.0.0/8"]),
                      **CREDENTIALS)
    put(allowed)
    assert connections and all(address == ("127.0.0.1", 3128) for address in connections)  # the proxy


def test_the_installation_s_store_is_not_limited(connections: list[tuple[str, int]]) -> None:
    put(S3Store("http://10.0.0.5:9000", "media", "us-east-1", **CREDENTIALS))
    assert connections and connections[0][0] == "10.0.0.5"


@pytest.mark.parametrize(("url", "origin"), [
    ("http://s3.local:8333", ("http", "s3.local", 8333)),
    ("HTTP://S3.Local.:8333/media", ("http", "s3.local", 8333)),
    ("https://s3.example.com", ("https", "s3.example.com", 443)),
    ("http://[::1]:9000", ("http", "::1", 9000)),
    ("http://169.254.169.254\\@s3.local:8333", None),  # urllib3 connects to 169.254.169.254
    ("http://user@s3.local:8333", None),
    ("http://s3.local:83x", None),
])
def test_an_origin_is_read_as_the_s3_client_reads_it_or_not_at_all(url: str, origin: Any) -> None:
    assert plain_origin(url) == origin
    assert same_origin(url, "http://s3.local:8333") is (origin == ("http", "s3.local", 8333))
