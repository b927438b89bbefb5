"""API keys, JWT issue and verification, roles and projects."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import jwt
import pytest

from onair.api_gateway.app import init_app
from onair.api_gateway.auth import (
    AuthError,
    ForbiddenError,
    Role,
    VerifiedTokens,
    bearer_token,
    find_key,
    issue_token,
    load_api_keys,
    parse_api_keys,
    verify_token,
)
from onair.api_gateway.config import GatewayConfig

SECRET = "unit-test-signing-key-of-32-bytes!"
OTHER = "another-signing-key-of-32-bytes!!"
PROJECT = "2e21fae6-af4c-4a4a-e0fc-08d903f55711"
KEYS = parse_api_keys({"keys": [
    {"name": "console", "key": "k-write-0123456789", "projects": [PROJECT.upper()], "role": "write"},
    {"name": "viewer", "keySha256": hashlib.sha256(b"k-read-0123456789").hexdigest(), "projects": PROJECT,
     "role": "read"},
    {"name": "ops", "key": "k-admin-0123456789", "projects": ["*"], "role": "admin"},
]})


def test_keys_are_found_by_hash_and_projects_are_normalised() -> None:
    assert find_key(KEYS, "k-write-0123456789").name == "console"  # type: ignore[union-attr]
    assert find_key(KEYS, "k-read-0123456789").name == "viewer"  # type: ignore[union-attr]
    assert find_key(KEYS, "nope") is None
    assert KEYS[0].projects == frozenset({PROJECT})


def test_token_round_trip_carries_role_and_projects() -> None:
    principal = verify_token(SECRET, issue_token(SECRET, KEYS[0], 60))
    assert principal.subject == "console" and principal.role is Role.WRITE
    principal.require(Role.WRITE, PROJECT)
    with pytest.raises(ForbiddenError, match="no access"):
        principal.require(Role.READ, "f5faa2e3-316b-4dd0-8f4d-ab41f6f71bd6")
    with pytest.raises(ForbiddenError, match="needs admin"):
        principal.require(Role.ADMIN)


def test_read_tokens_cannot_write_and_admin_sees_every_project() -> None:
    reader = verify_token(SECRET, issue_token(SECRET, KEYS[1], 60))
    with pytest.raises(ForbiddenError, match="role is read"):
        reader.require(Role.WRITE, PROJECT)
    admin = verify_token(SECRET, issue_token(SECRET, KEYS[2], 60))
    admin.require(Role.WRITE, "f5faa2e3-316b-4dd0-8f4d-ab41f6f71bd6")


def test_expired_wrong_key_and_tampered_tokens_are_refused() -> None:
    with pytest.raises(AuthError, match="expired"):
        verify_token(SECRET, issue_token(SECRET, KEYS[0], 60, now=1_000_000))
    with pytest.raises(AuthError, match="invalid"):
        verify_token(OTHER, issue_token(SECRET, KEYS[0], 60))
    forged = jwt.encode({"sub": "x", "role": "admin", "projects": ["*"], "iat": 1, "exp": 2**40,
                         "iss": "onair-gateway", "aud": "onair"}, SECRET * 2, algorithm="HS512")
    with pytest.raises(AuthError):
        verify_token(SECRET, forged)
    none_alg = jwt.encode({"sub": "x"}, None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(AuthError):
        verify_token(SECRET, none_alg)


def test_a_token_is_refused_once_its_key_is_removed_rotated_or_narrowed() -> None:
    tokens = VerifiedTokens(SECRET, KEYS)
    console, viewer = issue_token(SECRET, KEYS[0], 60), issue_token(SECRET, KEYS[1], 60)
    assert tokens.principal(console).subject == "console"  # verified, and remembered
    tokens.use_keys(KEYS[1:])  # the console's key removed
    with pytest.raises(AuthError, match="removed or changed; log in again"):
        tokens.principal(console)
    assert tokens.principal(viewer).subject == "viewer"  # the others' tokens keep working

    rotated = parse_api_keys([{"name": "viewer", "key": "k-read-2-0123456789", "projects": [PROJECT], "role": "read"}])
    narrowed = parse_api_keys([{"name": "viewer", "keySha256": KEYS[1].key_sha256, "projects": [], "role": "read"}])
    widened = parse_api_keys([{"name": "viewer", "keySha256": KEYS[1].key_sha256, "projects": [PROJECT],
                               "role": "write"}])
    for changed in (rotated, narrowed, widened):  # the same name: another key, other projects, another role
        tokens.use_keys(changed)
        with pytest.raises(AuthError, match="removed or changed"):
            tokens.principal(viewer)
    tokens.use_keys([*parse_api_keys([{"name": "renamed", "keySha256": KEYS[1].key_sha256,
                                       "projects": [PROJECT], "role": "read"}])])
    assert tokens.principal(viewer).role is Role.READ  # only its name changed: what it grants did not


def test_a_token_without_a_grant_is_refused() -> None:
    """Tokens are signed: the grant cannot be forged, only left out (a token of another gateway version)."""
    claims = jwt.decode(issue_token(SECRET, KEYS[2], 60), options={"verify_signature": False})
    del claims["grant"]
    with pytest.raises(AuthError, match="removed or changed"):
        VerifiedTokens(SECRET, KEYS).principal(jwt.encode(claims, SECRET, algorithm="HS256"))



@pytest.mark.parametrize("change", [{"role": "admin"}, {"projects": ["*"]}, {"projects": []}])
def test_a_token_whose_claims_are_not_its_keys_is_refused(change: dict[str, object]) -> None:
    """Only the holder of the signing key can sign claims; the gateway still grants what the key grants,
    never more nor less than the token says."""
    claims = jwt.decode(issue_token(SECRET, KEYS[1], 60), options={"verify_signature": False})
    with pytest.raises(AuthError, match="role or projects are not its key's"):
        VerifiedTokens(SECRET, KEYS).principal(jwt.encode({**claims, **change}, SECRET, algorithm="HS256"))


def test_a_new_signing_key_refuses_every_token_of_the_one_before() -> None:
    tokens = VerifiedTokens(SECRET, KEYS)
    before = tokens.issue(KEYS[0], 60)
    assert tokens.principal(before).subject == "console"  # verified, and remembered
    assert tokens.use_signing_key(OTHER) is True
    with pytest.raises(AuthError, match="invalid token: Signature verification failed"):
        tokens.principal(before)
    after = tokens.issue(KEYS[0], 60)
    assert tokens.principal(after).subject == "console"
    assert verify_token(OTHER, after).subject == "console"
    assert tokens.use_signing_key(OTHER) is False  # the key in force: nothing changes
    assert tokens.principal(after).subject == "console"

@pytest.mark.parametrize(("text", "error"), [
    ("keys: [", "neither JSON nor YAML"),
    ("[{name: a, key: x-0123456789abcdef, projects: 5}]", "API key 0: projects must be a list"),
    ("[{name: a, projects: ['*']}]", "API key 0: needs key or keySha256"),
    # Login has no rate limit: a key short enough to guess is refused (a digest cannot be checked).
    ("[{name: a, key: x-0123456789abcdef, projects: ['*']}, {name: b, key: guessable, projects: ['*']}]",
     "API key 1: key must be at least 16 characters"),
    ("name: a", "must be a list"),
])
def test_api_keys_that_do_not_parse_say_why(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        load_api_keys(text)


def test_a_keys_document_that_does_not_parse_says_where_without_showing_its_keys() -> None:
    for text in ('- {name: a, key: "SUPER-SECRET-KEY-0123456789, projects: ["*"]}',
                 "keys:\n\t- key: SUPER-SECRET-KEY-0123456789", "- {name: a, key: *SUPER-SECRET-KEY-0123456789}",
                 "- {name: a, key: !SUPER-SECRET-KEY-0123456789 x}"):
        with pytest.raises(ValueError, match=r"neither JSON nor YAML \(.* at line \d+, column \d+\)") as raised:
            load_api_keys(text)
        assert "SUPER-SECRET" not in str(raised.value)
        assert raised.value.__cause__ is None and raised.value.__context__ is not None  # not chained into a traceback


def test_a_token_gives_its_holder_no_way_to_test_guesses_at_its_key() -> None:
    """A token is readable by whoever holds it (a browser's storage, a proxy's log): its grant must not
    be worked out from a guessed key and the claims it shows."""
    token = issue_token(SECRET, KEYS[0], 60)
    claims = jwt.decode(token, options={"verify_signature": False})
    for guess in ("wrong-guess-0123456", "k-write-0123456789"):  # the second is the key
        digest = hashlib.sha256(guess.encode()).hexdigest()
        text = "\n".join([digest, claims["role"], *sorted(claims["projects"])])
        assert hashlib.sha256(text.encode()).hexdigest()[:32] != claims["grant"]
    assert VerifiedTokens(SECRET, KEYS).principal(token).subject == "console"


def test_a_token_a_gateway_of_the_version_before_issued_stays_valid_through_a_rolling_update() -> None:
    claims = jwt.decode(issue_token(SECRET, KEYS[0], 60), options={"verify_signature": False})
    digest = hashlib.sha256(b"k-write-0123456789").hexdigest()
    before = "\n".join([digest, "write", PROJECT])  # its grant was this digest, not a MAC
    claims["grant"] = hashlib.sha256(before.encode()).hexdigest()[:32]
    assert VerifiedTokens(SECRET, KEYS).principal(jwt.encode(claims, SECRET, algorithm="HS256")).subject == "console"


def test_a_token_from_a_replica_whose_clock_is_a_little_ahead_is_valid_at_once() -> None:
    ahead = issue_token(SECRET, KEYS[0], 60, now=time.time() + 3)
    assert VerifiedTokens(SECRET, KEYS).principal(ahead).subject == "console"
    far_ahead = issue_token(SECRET, KEYS[0], 60, now=time.time() + 60)
    with pytest.raises(AuthError, match="not yet valid"):
        VerifiedTokens(SECRET, KEYS).principal(far_ahead)


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer  "])
def test_bearer_header_parsing(header: str | None) -> None:
    with pytest.raises(AuthError):
        bearer_token(header)


def test_an_id_block_size_below_two_is_refused_at_start() -> None:
    """Ids are leased in blocks, the next once half of one is handed out: a block of 1 never leases."""
    with pytest.raises(ValueError, match="ONAIR_GATEWAY_ID_BLOCK_SIZE must be at least 2"):
        GatewayConfig.from_env({"ONAIR_GATEWAY_ID_BLOCK_SIZE": "1"})
    assert GatewayConfig.from_env({"ONAIR_GATEWAY_ID_BLOCK_SIZE": "2"}).id_block_size == 2


def test_config_from_env(tmp_path: Path) -> None:
    (tmp_path / "seed").write_text("a-stream-key-seed-from-a-mounted-secret\n")
    config = GatewayConfig.from_env({
        "ONAIR_GATEWAY_PORT": "9999", "ONAIR_GATEWAY_JWT_SECRET": "a-signing-key-of-at-least-32-characters",
        "ONAIR_GATEWAY_API_KEYS": "keys:\n- {name: a, key: x-0123456789abcdef, projects: ['*'], role: admin}\n",
        "ONAIR_GATEWAY_CORS_ORIGINS": "https://console.example.com/, http://localhost:3000",
        "ONAIR_GATEWAY_STREAM_KEY_SEED_FILE": str(tmp_path / "seed"),
    })
    assert config.port == 9999 and config.jwt_secret == "a-signing-key-of-at-least-32-characters"
    assert config.stream_key_seed == "a-stream-key-seed-from-a-mounted-secret"
    assert config.api_keys[0].role is Role.ADMIN
    assert config.cors_origins == ("https://console.example.com", "http://localhost:3000")


def test_a_short_jwt_signing_key_is_refused_at_start() -> None:
    """As a rotated key is (watched_secrets): an HS256 key shorter than its hash weakens every token."""
    with pytest.raises(ValueError, match="ONAIR_GATEWAY_JWT_SECRET has 3 characters; at least 32"):
        GatewayConfig.from_env({"ONAIR_GATEWAY_JWT_SECRET": "abc"})


def test_config_names_the_api_keys_secret() -> None:
    config = GatewayConfig.from_env({"ONAIR_GATEWAY_API_KEYS_SECRET": "onair-gateway",
                                     "ONAIR_GATEWAY_TEMPLATE_NAMESPACE": "media"})
    assert config.api_keys_secret_ref == ("media", "onair-gateway") and config.api_keys_secret_key == "api-keys.yaml"
    other = GatewayConfig.from_env({"ONAIR_GATEWAY_API_KEYS_SECRET": "ops/keys",
                                    "ONAIR_GATEWAY_API_KEYS_SECRET_KEY": "keys.json"})
    assert other.api_keys_secret_ref == ("ops", "keys") and other.api_keys_secret_key == "keys.json"
    with pytest.raises(ValueError, match="API_KEYS_SECRET or ONAIR_GATEWAY_API_KEYS"):
        GatewayConfig.from_env({"ONAIR_GATEWAY_API_KEYS_SECRET": "keys", "ONAIR_GATEWAY_API_KEYS": "[]"})


def test_the_gateway_refuses_to_start_without_a_stream_key_seed() -> None:
    with pytest.raises(ValueError, match="ONAIR_GATEWAY_STREAM_KEY_SEED: the stream-key seed must be at least 32"):
        init_app(GatewayConfig(stream_key_seed="short"))
