"""A small asyncio Kubernetes API client, shared by the operator and the gateway.

The official `kubernetes` package is synchronous; a reconcile loop and a watch-fed cache need many
requests in flight on one event loop. This client does only what onair needs: JSON CRUD, merge
patches, server-side apply, lists and watches, with kubeconfig or in-cluster credentials. Requests
with a whole answer go over onair.http1's kept-alive connections; watches over aiohttp's client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import yaml
from pydantic_core import from_json, to_json

from onair.http1 import Http1Pool
from onair.urls import url_host

# How long a token read from a file is used before the file is read again, as client-go does: the kubelet
# rotates a projected token long before the old one expires, and a read per request is I/O on every call.
TOKEN_REREAD_SECONDS = 60.0
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# A list whose items are the objects' metadata only (the API server's PartialObjectMetadataList).
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


class ApiError(Exception):
    """A non-2xx answer of the API server, with its Status object."""

    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        self.status = status
        self.body = body
        self.reason = str(body.get("reason", ""))
        super().__init__(f"{status} {self.reason}: {body.get('message', '')}")


@dataclass(frozen=True)
class Credentials:
    server: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    token_file: str | None = None
    insecure: bool = False

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None) -> Credentials:
        path = path or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or str(Path.home() / ".kube/config")
        config = yaml.safe_load(Path(path).read_text())
        base = Path(path).parent
        context_name = context or config["current-context"]
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user: dict[str, Any] = next((u["user"] for u in config.get("users", []) if u["name"] == ctx.get("user")), {})

        def file_of(entry: Mapping[str, Any], key: str) -> str | None:
            if entry.get(f"{key}-data"):
                handle = tempfile.NamedTemporaryFile(prefix="onair-kube-", delete=False)
                handle.write(base64.b64decode(entry[f"{key}-data"]))
                handle.close()
                os.chmod(handle.name, 0o600)
                return handle.name
            if entry.get(key):
                return str((base / entry[key]).resolve())
            return None

        return cls(
            server=cluster["server"].rstrip("/"),
            ca_file=file_of(cluster, "certificate-authority"),
            cert_file=file_of(user, "client-certificate"),
            key_file=file_of(user, "client-key"),
            token=user.get("token"),
            token_file=user.get("tokenFile"),
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
        )

    @classmethod
    def in_cluster(cls) -> Credentials:
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        return cls(
            server=f"https://{url_host(host)}:{port}",
            ca_file=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
            token_file=str(SERVICE_ACCOUNT_DIR / "token"),
        )

    @classmethod
    def discover(cls) -> Credentials:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT_DIR / "token").exists():
            return cls.in_cluster()
        return cls.from_kubeconfig()

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            return False
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


def resource_path(
    api_version: str, plural: str, namespace: str | None = None, name: str | None = None, sub: str | None = None
) -> str:
    """`/api/v1/namespaces/ns/pods/x/status` and the like, from its parts."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = prefix + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


def parse_json(raw: bytes) -> Any:
    """pydantic-core's parser, about twice as fast as json.loads on Kubernetes objects (a create's answer
    and its watch event, on every create through the gateway). What it refuses goes to json.loads, which
    reads a lone surrogate escape (the API server never writes one) and raises JSONDecodeError for what
    is not JSON at all."""
    try:
        return from_json(raw)
    except ValueError:
        return json.loads(raw)


class KubeClient:
    def __init__(self, credentials: Credentials, *, connections: int = 64, field_manager: str = "onair") -> None:
        self.credentials = credentials
        self.field_manager = field_manager
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._pool: Http1Pool | None = None
        self._token: str | None = None
        self._token_read_at = 0.0

    @property
    def pool(self) -> Http1Pool:
        """Requests with a whole answer (see onair.http1 for why not aiohttp's client)."""
        if self._pool is None:
            self._pool = Http1Pool(self.credentials.server, ssl_context=self.credentials.ssl_context(),
                                   connections=self._connections)
        return self._pool

    @property
    def session(self) -> aiohttp.ClientSession:
        """Watches: streams read line by line for as long as the server keeps them open."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections, ssl=self.credentials.ssl_context())
            # No cookie jar: the API server sets no cookies, and a jar is consulted on every request.
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _headers(self, content_type: str | None = None, accept: str = "application/json") -> dict[str, str]:
        headers = {"Accept": accept}
        token = self._bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _bearer(self) -> str | None:
        token_file = self.credentials.token_file
        if not token_file:
            return self.credentials.token
        now = time.monotonic()
        if self._token is None or now - self._token_read_at >= TOKEN_REREAD_SECONDS:
            # Projected tokens rotate: the file is read again once TOKEN_REREAD_SECONDS have passed.
            self._token, self._token_read_at = Path(token_file).read_text().strip(), now
        return self._token

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str | int] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
        accept: str = "application/json",
    ) -> dict[str, Any]:
        target = path + ("?" + urlencode(params) if params else "")
        status, raw = await self.pool.request(
            method, target, self._headers(content_type if body is not None else None, accept),
            b"" if body is None else to_json(body), timeout=timeout)
        try:
            payload = parse_json(raw) if raw else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            # e.g. a plain-text 404 for an unknown resource path
            payload = {"message": raw[:1000].decode(errors="replace")}
        if status >= 400:
            raise ApiError(status, payload if isinstance(payload, dict)
                           else {"message": raw[:1000].decode(errors="replace")})
        return payload if isinstance(payload, dict) else {"value": payload}

    async def get_text(self, path: str) -> str:
        """A plain-text endpoint of the API server, such as /metrics."""
        status, raw = await self.pool.request("GET", path, self._headers(accept="text/plain"), timeout=30)
        text = raw.decode(errors="replace")
        if status >= 400:
            raise ApiError(status, {"message": text[:1000]})
        return text

    async def get(self, path: str, **params: str | int) -> dict[str, Any]:
        return await self.request("GET", path, params=params or None)

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.get(path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Creates the object; None when it already exists (409), which callers treat as done."""
        try:
            return await self.request("POST", path, body, params={"fieldManager": self.field_manager})
        except ApiError as error:
            if error.status == 409 and error.reason == "AlreadyExists":
                return None
            raise

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, patch, content_type=MERGE_PATCH,
                                  params={"fieldManager": self.field_manager})

    async def json_patch(self, path: str, operations: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.request("PATCH", path, operations, content_type=JSON_PATCH,
                                  params={"fieldManager": self.field_manager})

    async def delete(self, path: str, **params: str | int) -> dict[str, Any] | None:
        try:
            return await self.request("DELETE", path, params=params or None)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def list(self, path: str, **params: str | int) -> dict[str, Any]:
        """All pages of a list, joined (the API server pages with `continue`)."""
        items: list[dict[str, Any]] = []
        page: dict[str, Any] = {}
        async for page in self.pages(path, metadata_only=False, **params):
            items.extend(page.get("items") or ())  # a metadata-only list of nothing has "items": null
        page["items"] = items
        return page

    async def pages(self, path: str, *, metadata_only: bool = False, **params: str | int
                    ) -> AsyncIterator[dict[str, Any]]:
        """The pages of a list one by one, all of one snapshot (one resourceVersion): a caller that
        keeps only what it needs of each page never holds the whole list. `metadata_only`: the items
        are the objects' metadata, not the whole objects."""
        query: dict[str, str | int] = {"limit": 500, **params}
        accept = METADATA_ONLY if metadata_only else "application/json"
        while True:
            page = await self.request("GET", path, params=query, accept=accept)
            yield page
            token = page.get("metadata", {}).get("continue")
            if not token:
                return
            query["continue"] = token

    async def watch(
        self, path: str, resource_version: str, *, timeout_seconds: int = 300, **params: str | int
    ) -> AsyncIterator[dict[str, Any]]:
        """The events after `resource_version` until the server ends the watch; ERROR events raise."""
        async for line in self.watch_lines(path, resource_version, timeout_seconds=timeout_seconds, **params):
            yield parse_watch_event(line)

    async def watch_lines(
        self, path: str, resource_version: str, *, timeout_seconds: int = 300, **params: str | int
    ) -> AsyncIterator[bytes]:
        """`watch`'s events as the server's JSON lines, unparsed: a caller that already holds an
        event's object (its own write) need not parse it. Give each to `parse_watch_event`."""
        query = {"watch": 1, "resourceVersion": resource_version, "timeoutSeconds": timeout_seconds,
                 "allowWatchBookmarks": "true", **params}
        url = self.credentials.server + path + "?" + urlencode(query)
        async with self.session.get(
            url, headers=self._headers(), timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
        ) as response:
            if response.status >= 400:
                raise ApiError(response.status, await response.json(content_type=None))
            async for line in response.content:
                if line.strip():
                    yield line


def parse_watch_event(line: bytes) -> dict[str, Any]:
    """One watch event from its JSON line; an ERROR event raises its status as an ApiError."""
    event: dict[str, Any] = parse_json(line)
    if event.get("type") == "ERROR":
        status = event.get("object", {})
        raise ApiError(int(status.get("code", 500)), status)
    return event


async def gather_limited(limit: int, *coroutines: Any) -> list[Any]:
    """asyncio.gather with at most `limit` coroutines running at once."""
    semaphore = asyncio.Semaphore(limit)

    async def run(coroutine: Any) -> Any:
        async with semaphore:
            return await coroutine

    return await asyncio.gather(*(run(c) for c in coroutines))
