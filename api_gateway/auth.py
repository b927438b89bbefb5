"""API keys, short-lived JWTs (HS256) and what a token may do.

An API key (kept in a Secret) maps to a set of projects ("*" for every project) and a role:
read < write < admin. POST /api/v1/login exchanges the key for a JWT carrying the same; every other
call presents the JWT as `Authorization: Bearer`. A token also carries its key's grant (a digest of the
key, its role and its projects): once that key is removed or changed, its tokens are refused.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import yaml

ISSUER = "onair-gateway"
AUDIENCE = "onair"
ALGORITHM = "HS256"
ALL_PROJECTS = "*"


class Role(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return {"read": 0, "write": 1, "admin": 2}[self.value]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class AuthError(Exception):
    """401: the caller is not authenticated."""


class ForbiddenError(Exception):
    """403: authenticated, not allowed."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    key_sha256: str
    projects: frozenset[str]
    role: Role

    def matches(self, presented: str) -> bool:
        digest = hashlib.sha256(presented.encode()).hexdigest()
        return hmac.compare_digest(digest, self.key_sha256)

    @property
    def _grant_text(self) -> bytes:
        return "\n".join([self.key_sha256, self.role.value, *sorted(self.projects)]).encode()

    @property
    def legacy_grant(self) -> str:
        """The grant gateways before the MAC gave (a digest): their tokens stay valid through a rolling
        update (they are still signed with the signing key). Never issued."""
        return hashlib.sha256(self._grant_text).hexdigest()[:32]

    def grant(self, signing_key: str) -> str:
        """What the tokens of this key are worth: another key, role or set of projects gives another
        grant, so that rotating a key (or narrowing it) revokes the tokens issued for it. A MAC under
        the signing key, not a digest of the key: a token is readable by whoever holds it, and a
        digest of the key in it would let its holder try guesses at the key offline."""
        return hmac.new(signing_key.encode(), self._grant_text, hashlib.sha256).hexdigest()[:32]


# How far apart two replicas' clocks may be: a token issued by one is valid at once on the other.
CLOCK_SKEW_SECONDS = 5
# Login has no rate limit (behind an ingress every client comes from its address, so one guesser would
# lock everybody out); a key's length is what makes guessing it hopeless. The chart's schema asks the same.
MIN_API_KEY_LENGTH = 16


def load_api_keys(text: str) -> list[ApiKey]:
    """The keys of a JSON or YAML document (an environment variable, a file, a Secret's value)."""
    text = text.strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            # Where, never what: PyYAML's words quote the document (an alias, a tag), which holds keys.
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ValueError(f"API keys: neither JSON nor YAML ({type(error).__name__}{where})") from None
    return parse_api_keys(data)


def parse_api_keys(data: Any) -> list[ApiKey]:
    """[{name, key | keySha256, projects: [guid|"*"], role}] (or {"keys": [...]}) -> ApiKeys."""
    if isinstance(data, Mapping):
        data = data.get("keys", data.get("apiKeys"))
    if not isinstance(data, list):
        raise ValueError("API keys must be a list of {name, key, projects, role}")
    keys = []
    for index, entry in enumerate(data):
        if not isinstance(entry, Mapping):
            raise ValueError(f"API key {index}: must be an object")
        if entry.get("key") and len(str(entry["key"])) < MIN_API_KEY_LENGTH:
            raise ValueError(f"API key {index}: key must be at least {MIN_API_KEY_LENGTH} characters, and random "
                             "(e.g. `openssl rand -hex 24`): login answers whoever presents it")
        digest = entry.get("keySha256") or (
            hashlib.sha256(str(entry["key"]).encode()).hexdigest() if entry.get("key") else None)
        if not digest:
            raise ValueError(f"API key {index}: needs key or keySha256")
        projects = entry.get("projects") or []
        if isinstance(projects, str):
            projects = [projects]
        if not isinstance(projects, list):
            raise ValueError(f"API key {index}: projects must be a list of project ids or \"*\"")
        keys.append(ApiKey(
            name=str(entry.get("name") or f"key-{index}"),
            key_sha256=str(digest).lower(),
            projects=frozenset(p if p == ALL_PROJECTS else str(p).lower() for p in projects),
            role=Role(str(entry.get("role", "read")).lower()),
        ))
    return keys


@dataclass(frozen=True)
class Principal:
    subject: str
    projects: frozenset[str]
    role: Role
    grant: str = ""  # the grant of the key the token was issued for

    def can_see(self, project_id: str) -> bool:
        return ALL_PROJECTS in self.projects or project_id.lower() in self.projects

    def require(self, role: Role, project_id: str | None = None) -> None:
        if project_id is not None and not self.can_see(project_id):
            raise ForbiddenError(f"this token has no access to project {project_id}")
        if not self.role.allows(role):
            raise ForbiddenError(f"this token's role is {self.role.value}; the call needs {role.value}")


def find_key(keys: Iterable[ApiKey], presented: str) -> ApiKey | None:
    found = None
    for key in keys:  # no early exit: the same time for every key
        if key.matches(presented):
            found = found or key
    return found


def issue_token(secret: str, key: ApiKey, ttl_seconds: int, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": key.name, "iat": issued, "nbf": issued - CLOCK_SKEW_SECONDS,
        "exp": issued + ttl_seconds, "projects": sorted(key.projects), "role": key.role.value,
        "grant": key.grant(secret),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Principal:
    return _verify(secret, token)[0]


def _verify(secret: str, token: str) -> tuple[Principal, float]:
    """The token's principal and the time it expires."""
    if not token.isascii():  # a JWT is base64url and dots; other bytes would fail as they are encoded
        raise AuthError("invalid token: not a JWT")
    try:
        # The leeway admits a token whose iat is ahead of this clock (PyJWT refuses one otherwise): another
        # replica's clock may be a little ahead of this one's. It also admits one up to as long past its exp.
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                            leeway=CLOCK_SKEW_SECONDS, options={"require": ["exp", "iat", "sub"]})
    except jwt.ExpiredSignatureError as error:
        raise AuthError("the token has expired; log in again") from error
    except jwt.PyJWTError as error:
        raise AuthError(f"invalid token: {error}") from error
    try:
        projects = claims.get("projects") or []
        if not isinstance(projects, list):
            raise ValueError("projects")
        principal = Principal(str(claims["sub"]), frozenset(str(p).lower() for p in projects),
                              Role(str(claims.get("role"))), str(claims.get("grant") or ""))
        return principal, float(claims["exp"])
    except (ValueError, KeyError, TypeError) as error:
        raise AuthError("invalid token: bad claims") from error


class VerifiedTokens:
    """The API keys and the signing key in force, and the tokens already verified, kept until they
    expire. A console sends the same token with every request, and checking its signature and claims
    again costs more than serving a cached list. A token is accepted only while the key it was issued
    for is in force as it was then (its grant), and only with the rights of that key."""

    def __init__(self, signing_key: str, api_keys: Iterable[ApiKey], capacity: int = 4096) -> None:
        self.signing_key = signing_key
        self.capacity = capacity
        self._known: dict[str, tuple[Principal, float]] = {}
        self.use_keys(api_keys)

    def use_keys(self, api_keys: Iterable[ApiKey]) -> None:
        """Puts these keys in force, in place of the ones before: the tokens of a key that is gone or
        changed are refused from now on."""
        self.api_keys = tuple(api_keys)
        self._by_grant = {grant: key for key in self.api_keys
                          for grant in (key.grant(self.signing_key), key.legacy_grant)}

    def use_signing_key(self, signing_key: str) -> bool:
        """Signs and verifies with `signing_key` from now on; False when it is the key in force. Every
        token signed with the one before is refused at once: a signing key is changed because it may
        have leaked, and whoever holds it can sign any claims. Clients log in again."""
        if signing_key == self.signing_key:
            return False
        self.signing_key = signing_key
        self._known.clear()
        self.use_keys(self.api_keys)  # their grants are MACs under the signing key
        return True

    def issue(self, key: ApiKey, ttl_seconds: int, now: float | None = None) -> str:
        return issue_token(self.signing_key, key, ttl_seconds, now)

    def principal(self, token: str, now: float | None = None) -> Principal:
        known = self._known.get(token)
        if known is not None and known[1] > (time.time() if now is None else now):
            principal = known[0]
        else:
            principal, expires = _verify(self.signing_key, token)
            key = self._by_grant.get(principal.grant)
            if key is not None and (principal.role is not key.role or principal.projects != key.projects):
                # The grant is derived from the key's role and projects: claims that differ were not
                # issued here.
                raise AuthError("invalid token: its role or projects are not its key's")
            if len(self._known) >= self.capacity:
                self._known.clear()
            self._known[token] = (principal, expires)
        if principal.grant not in self._by_grant:
            raise AuthError("the API key this token was issued for has been removed or changed; log in again")
        return principal


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("missing Authorization: Bearer token (POST /api/v1/login gives one)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    return token.strip()
