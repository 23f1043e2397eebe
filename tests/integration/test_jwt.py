"""Bearer JWTs beside API keys: a local issuer's JWKS, the classic attacks, key rotation and outages."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from litestar.testing import AsyncTestClient

from scheduler.api.app import create_app
from scheduler.config import ConfigError, Settings, load_settings
from scheduler.ui import session
from scheduler.web.tokens import (
    VERIFIER_STATE,
    JwksKeys,
    TokenVerifier,
    could_be_token,
    parse_jwks,
)
from tests.conftest import create_api_key, eventually, free_port, settings_for
from tests.jwks import AUDIENCE, ISSUER, Issuer, Key, b64url, claims, forge, make_key, sign, weak_rsa_key

UNAUTHORIZED = "missing or invalid API key; send Authorization: Bearer <key>"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class ManualClock:
    """The JWKS cache's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def jwt_settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth": "required",
        "auth_jwt_issuer": ISSUER,
        "auth_jwt_audience": AUDIENCE,
        "auth_jwt_algorithms": "RS256,ES256,PS256,EdDSA",
        "auth_failure_burst": 1000,  # the failure limit has a test of its own
    }
    return settings_for(db_url, **(values | overrides))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    """A running JWKS server publishing an RSA, an EC and an Ed25519 key."""
    idp = Issuer()
    for alg in ("RS256", "ES256", "EdDSA"):
        idp.add(alg, f"{alg.lower()}-1")
    idp.start()
    yield idp
    idp.stop()


@dataclass
class Api:
    client: AsyncTestClient[Any]
    issuer: Issuer
    clock: ManualClock
    settings: Settings

    @property
    def rsa(self) -> Key:
        return self.issuer.keys["rs256-1"]

    async def get(self, token: str, path: str = "/jobs") -> Any:
        return await self.client.get(path, headers=bearer(token))

    async def create_job(self, token: str, name: str = "report") -> Any:
        body = {"name": name, "schedule": "@every 1h", "action": {"type": "log"}}
        return await self.client.post("/jobs", json=body, headers=bearer(token))


async def _api(
    db_url: str, issuer: Issuer, wall: Callable[[], dt.datetime] | None = None, **overrides: Any
) -> AsyncIterator[Api]:
    settings = jwt_settings(db_url, auth_jwt_jwks_url=issuer.url, **overrides)
    app = create_app(settings) if wall is None else create_app(settings, clock=wall)
    clock = ManualClock()
    keys = JwksKeys(
        issuer.url,
        ttl_s=settings.auth_jwt_jwks_ttl_s,
        min_refresh_s=settings.auth_jwt_jwks_min_refresh_s,
        clock=clock,
    )
    app.state[VERIFIER_STATE] = TokenVerifier(settings, keys)  # the app's own, on the test's clock
    async with AsyncTestClient(app=app) as client:
        yield Api(client, issuer, clock, settings)


@pytest.fixture
async def api(db_url: str, issuer: Issuer) -> AsyncIterator[Api]:
    """The API with auth required, tokens from ``issuer`` on, and the JWKS cache on a manual clock."""
    async for made in _api(db_url, issuer):
        yield made


async def assert_unauthorized(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer realm="scheduler"'
    assert response.json()["detail"] == UNAUTHORIZED


class TestValidTokens:
    """A token from the issuer, signed with a published key, names its namespace as a key does."""

    @pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
    async def test_a_valid_token_works_in_its_namespace(self, api, alg):
        token = sign(api.issuer.keys[f"{alg.lower()}-1"], claims("alpha"))
        made = await api.create_job(token)
        assert made.status_code == 201, made.text
        assert made.json()["namespace"] == "alpha"
        listed = await api.get(token)
        assert listed.status_code == 200
        assert [job["name"] for job in listed.json()["items"]] == ["report"]

    async def test_a_ps256_token_verifies_with_an_rsa_key_published_without_alg(self, db_url):
        idp = Issuer()
        key = idp.add("PS256", "pss")
        idp.body = json.dumps({"keys": [key.public_jwk(with_alg=False)]}).encode()
        idp.start()
        try:
            async for api in _api(db_url, idp):
                assert (await api.get(sign(key, claims()))).status_code == 200
        finally:
            idp.stop()

    async def test_a_token_and_a_key_of_one_namespace_see_the_same_jobs(self, api, db_url):
        key_headers = bearer(await create_api_key(db_url, "alpha"))
        made = await api.create_job(sign(api.rsa, claims("alpha")))
        assert made.status_code == 201
        by_key = await api.client.get(f"/jobs/{made.json()['id']}", headers=key_headers)
        assert by_key.status_code == 200
        assert by_key.json()["namespace"] == "alpha"

    async def test_a_token_for_namespace_a_gets_404_on_bs_job_exactly_like_a_missing_one(self, api):
        beta_job = await api.create_job(sign(api.rsa, claims("beta")))
        assert beta_job.status_code == 201
        alpha = sign(api.issuer.keys["es256-1"], claims("alpha"))
        job_id = beta_job.json()["id"]
        foreign = await api.get(alpha, f"/jobs/{job_id}")
        missing_id = str(uuid.uuid4())
        missing = await api.get(alpha, f"/jobs/{missing_id}")
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json()["detail"].replace(job_id, "<id>") == missing.json()["detail"].replace(
            missing_id, "<id>"
        )
        trigger = await api.client.post(f"/jobs/{job_id}/trigger", headers=bearer(alpha))
        assert trigger.status_code == 404
        assert (await api.get(alpha)).json()["items"] == []

    async def test_expiry_and_not_before_allow_the_small_leeway_only(self, api):
        now = int(time.time())
        assert (await api.get(sign(api.rsa, claims(exp=now - 5)))).status_code == 200
        assert (await api.get(sign(api.rsa, claims(nbf=now + 5)))).status_code == 200
        await assert_unauthorized(await api.get(sign(api.rsa, claims(exp=now - 60))))
        await assert_unauthorized(await api.get(sign(api.rsa, claims(nbf=now + 60))))

    async def test_a_remembered_token_is_refused_once_expired_by_the_apps_clock(self, db_url, issuer):
        now = dt.datetime.now(dt.UTC)
        wall = {"now": now}
        async for api in _api(db_url, issuer, wall=lambda: wall["now"]):
            token = sign(api.rsa, claims(exp=int(now.timestamp()) + 60))
            assert (await api.get(token)).status_code == 200
            assert (await api.get(token)).status_code == 200
            wall["now"] = now + dt.timedelta(seconds=60 + api.settings.auth_jwt_leeway_s)
            await assert_unauthorized(await api.get(token))

    async def test_an_audience_list_holding_ours_is_accepted(self, api):
        token = sign(api.rsa, claims(aud=["other-service", AUDIENCE]))
        assert (await api.get(token)).status_code == 200


def _attacks(key: Key, other: Key) -> dict[str, str]:
    """Tokens that must all be refused, by what each tries."""
    now = int(time.time())
    good = claims("alpha")
    header = {"alg": "RS256", "typ": "JWT", "kid": key.kid}
    public_pem = key.public_pem()
    return {
        "alg none, empty signature": forge({"alg": "none", "typ": "JWT", "kid": key.kid}, good),
        "alg none, some signature": forge({"alg": "none", "kid": key.kid}, good) + "c2ln",
        "alg NONE": forge({"alg": "NONE", "kid": key.kid}, good) + "c2ln",
        "HS256 signed with the public key PEM": forge(header | {"alg": "HS256"}, good, public_pem),
        "HS256 signed with the public JWK": forge(
            header | {"alg": "HS256"}, good, json.dumps(key.public_jwk()).encode()
        ),
        "expired an hour ago": sign(key, claims(exp=now - 3600, nbf=now - 7200, iat=now - 7200)),
        "not valid for an hour": sign(key, claims(nbf=now + 3600)),
        "no exp": sign(key, claims(exp=None)),
        "exp not a number": sign(key, claims(exp="tomorrow")),
        "wrong issuer": sign(key, claims(iss="https://evil.test")),
        "no issuer": sign(key, claims(iss=None)),
        "wrong audience": sign(key, claims(aud="another-service")),
        "no audience": sign(key, claims(aud=None)),
        "no namespace": sign(key, claims(scheduler_namespace=None)),
        "namespace claim not a namespace": sign(key, claims(scheduler_namespace="al pha/../beta")),
        "namespace claim too long": sign(key, claims(scheduler_namespace="a" * 65)),
        "namespace claim a list": sign(key, claims(scheduler_namespace=["alpha"])),
        "signed by another key under a published kid": sign(other, good, kid=key.kid),
        "signed by an unpublished key": sign(other, good),
        "published RSA key named, EC algorithm": sign(make_key("ES256"), good, kid=key.kid),
        "RS384, not configured": jwt_encode_rs384(key, good),
        "a critical header extension": sign(key, good, crit=["exp"], exp=1),
        "payload changed after signing": _tampered(sign(key, good)),
        "malformed base64": "eyJhbGciOi!.eyJzdWIiOiJ4In0.c2ln",
        "a segment of impossible length": "eyJhbGciOiJSUzI1NiJ9.a.c2ln",
        "header not JSON": f"{b64url(b'not json')}.{b64url(b'{}')}.c2ln",
        "header a JSON list": f"{b64url(b'[1, 2]')}.{b64url(b'{}')}.c2ln",
        "header a huge kid": sign(key, good, kid="k" * 600),
        "two segments": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0",
        "four segments": sign(key, good) + ".c2ln",
    }


def jwt_encode_rs384(key: Key, payload: dict[str, Any]) -> str:
    import jwt  # noqa: PLC0415 - the library, to make a token of an algorithm we do not accept

    return jwt.encode(payload, key.private, algorithm="RS384", headers={"kid": key.kid})


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["scheduler_namespace"] = "beta"
    return f"{header}.{b64url(json.dumps(body).encode())}.{signature}"


ATTACKS = list(_attacks(make_key("RS256", "x"), make_key("RS256", "y")))


class TestRefusedTokens:
    """Every kind of bad token gets the one 401 a bad key gets, never a 500, and leaks no reason."""

    async def test_every_classic_attack_is_a_plain_401(self, api):
        bad_key = (await api.get("sk_" + "x" * 43)).json()
        answers = {}
        for attack, token in _attacks(api.rsa, make_key("RS256", "rs256-impostor")).items():
            read, write = await api.get(token), await api.create_job(token)
            answers[attack] = (read.status_code, write.status_code, read.headers.get("www-authenticate"))
            assert read.json() == write.json() == bad_key, attack
        assert answers == dict.fromkeys(ATTACKS, (401, 401, 'Bearer realm="scheduler"'))
        assert (await api.get(sign(api.rsa, claims()))).status_code == 200  # the real thing still works

    async def test_a_64_kib_authorization_header_is_refused_unread(self, api):
        header_segment = b64url(json.dumps({"alg": "RS256", "kid": "k" * 50_000}).encode())
        huge = f"{header_segment}.{b64url(b'{}')}.c2ln"
        assert len(huge) > 64 * 1024
        started = time.monotonic()
        await assert_unauthorized(await api.get(huge))
        await assert_unauthorized(await api.get("ey" + "A" * 70_000))
        assert time.monotonic() - started < 1.0
        assert api.issuer.fetches() == 0  # nothing was decoded, so no key was looked for

    async def test_a_token_whose_header_alone_is_too_long_is_refused(self, api):
        padded = sign(api.rsa, claims(), x_padding="p" * 2000)
        assert len(padded) < 8 * 1024
        assert not could_be_token(padded)
        await assert_unauthorized(await api.get(padded))

    async def test_refused_tokens_count_against_the_address_like_unknown_keys(self, db_url, issuer):
        async for api in _api(db_url, issuer, auth_failure_burst=3):
            valid = sign(api.rsa, claims())
            assert (await api.get(valid)).status_code == 200
            for _ in range(3):
                await assert_unauthorized(await api.get(sign(api.rsa, claims(aud="elsewhere"))))
            limited = await api.get(sign(api.rsa, claims(aud="elsewhere")))
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
            assert (await api.get(valid)).status_code == 429  # as an uncached key would be

    async def test_a_tokens_requests_are_rate_limited_per_namespace_and_subject(self, db_url, issuer):
        async for api in _api(db_url, issuer, rate_limit_per_s=1, rate_limit_burst=2):
            first = sign(api.rsa, claims("alpha", sub="svc-1"))
            again = sign(api.issuer.keys["es256-1"], claims("alpha", sub="svc-1"))  # same subject
            assert [(await api.get(t)).status_code for t in (first, again, first)] == [200, 200, 429]
            assert (await api.get(sign(api.rsa, claims("alpha", sub="svc-2")))).status_code == 200
            assert (await api.get(sign(api.rsa, claims("beta", sub="svc-1")))).status_code == 200


class TestJwks:
    """The key set is cached, refreshed on unknown kids within a bound, and an outage is never a 500."""

    async def test_an_unknown_kid_refreshes_once_and_a_newly_published_key_is_then_accepted(self, api):
        assert (await api.get(sign(api.rsa, claims()))).status_code == 200
        assert api.issuer.fetches() == 1
        await assert_unauthorized(await api.get(sign(make_key("RS256", "too-soon"), claims())))
        assert api.issuer.fetches() == 1  # the set was fetched a moment ago: not again so soon

        api.clock.advance(api.settings.auth_jwt_jwks_min_refresh_s)
        ghost = api.issuer.add("RS256", "ghost", publish=False)
        await assert_unauthorized(await api.get(sign(ghost, claims())))
        assert api.issuer.fetches() == 2  # one refresh for the unknown kid
        await assert_unauthorized(await api.get(sign(make_key("RS256", "ghost-2"), claims())))
        assert api.issuer.fetches() == 2  # none more within the minimum interval

        rotated = api.issuer.add("ES256", "rotated")
        await assert_unauthorized(await api.get(sign(rotated, claims())))
        assert api.issuer.fetches() == 2
        api.clock.advance(api.settings.auth_jwt_jwks_min_refresh_s)
        assert (await api.get(sign(rotated, claims()))).status_code == 200
        assert api.issuer.fetches() == 3
        assert (await api.get(sign(api.rsa, claims()))).status_code == 200
        assert api.issuer.fetches() == 3

    async def test_a_flood_of_made_up_kids_costs_the_issuer_one_fetch(self, api):
        assert (await api.get(sign(api.rsa, claims()))).status_code == 200
        api.clock.advance(api.settings.auth_jwt_jwks_min_refresh_s)
        impostor = make_key("RS256")
        tokens = [sign(impostor, claims(), kid=f"made-up-{n}") for n in range(50)]
        answers = await asyncio.gather(*(api.get(token) for token in tokens))
        assert {answer.status_code for answer in answers} == {401}
        assert api.issuer.fetches() == 2

    async def test_lookups_that_arrive_during_a_fetch_wait_for_it_and_share_it(self, issuer):
        # The key cache on its own, in this test's event loop: the test client runs requests one
        # at a time, and here they really overlap.
        clock = ManualClock()
        keys = JwksKeys(issuer.url, ttl_s=300, min_refresh_s=30, clock=clock)
        assert await keys.find("rs256-1", "RS256") is not None
        issuer.add("ES256", "rotated")
        clock.advance(30)
        found = await asyncio.gather(*(keys.find("rotated", "ES256") for _ in range(20)))
        assert all(key is not None and key.algorithms == {"ES256"} for key in found)
        clock.advance(30)
        made_up = await asyncio.gather(*(keys.find(f"made-up-{n}", "RS256") for n in range(50)))
        assert made_up == [None] * 50
        assert issuer.fetches() == 3

    async def test_a_stale_set_is_refreshed_in_the_background_and_a_withdrawn_key_stops_working(self, api):
        token = sign(api.rsa, claims())
        assert (await api.get(token)).status_code == 200
        api.issuer.published.remove("rs256-1")
        api.clock.advance(api.settings.auth_jwt_jwks_ttl_s)
        assert (await api.get(token)).status_code == 200  # answered from the known keys meanwhile
        await eventually(lambda: api.issuer.fetches() == 2, what="the background refresh")
        await eventually(lambda: api.client.app.state[VERIFIER_STATE].keys._fetching is None)
        await assert_unauthorized(await api.get(token))
        assert (await api.get(sign(api.issuer.keys["es256-1"], claims()))).status_code == 200

    async def test_known_keys_keep_working_while_the_jwks_server_is_down(self, api):
        token = sign(api.rsa, claims())
        assert (await api.get(token)).status_code == 200
        api.issuer.stop()
        api.clock.advance(api.settings.auth_jwt_jwks_ttl_s)
        for _ in range(3):
            assert (await api.get(token)).status_code == 200
            await assert_unauthorized(await api.get(sign(make_key("RS256", "new-kid"), claims())))
            api.clock.advance(api.settings.auth_jwt_jwks_min_refresh_s)
        assert (await api.get(sign(api.issuer.keys["eddsa-1"], claims()))).status_code == 200

    async def test_without_any_key_loaded_a_token_gets_503_with_retry_after_until_the_issuer_answers(
        self, api
    ):
        api.issuer.body = b"<html>maintenance</html>"
        token = sign(api.rsa, claims())
        for _ in range(2):
            answer = await api.get(token)
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == str(int(api.settings.auth_jwt_jwks_min_refresh_s))
            assert "signing keys" in answer.json()["detail"]
        assert api.issuer.fetches() == 1
        await assert_unauthorized(await api.get("eyJhbGciOi!.x.y"))  # a malformed one is still a 401
        api.issuer.body = None
        api.clock.advance(api.settings.auth_jwt_jwks_min_refresh_s)
        assert (await api.get(token)).status_code == 200

    async def test_an_issuer_that_refuses_connections_from_the_start_is_a_503_not_a_500(self, db_url):
        settings = jwt_settings(db_url, auth_jwt_jwks_url=f"http://127.0.0.1:{free_port()}/certs")
        async with AsyncTestClient(app=create_app(settings)) as client:
            answer = await client.get("/jobs", headers=bearer(sign(make_key("RS256"), claims())))
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) >= 1

    async def test_an_oversized_key_set_is_not_read(self, api):
        api.issuer.body = json.dumps({"keys": [api.rsa.public_jwk()], "pad": "x" * 300_000}).encode()
        assert (await api.get(sign(api.rsa, claims()))).status_code == 503

    def test_only_asymmetric_signing_keys_of_a_set_are_used(self):
        rsa_key, small_jwk = make_key("RS256", "ok"), weak_rsa_key("small").public_jwk()
        secret = {"kty": "oct", "kid": "hmac", "k": b64url(b"secret"), "alg": "HS256"}
        encryption = rsa_key.public_jwk() | {"kid": "enc", "use": "enc"}
        private = rsa_key.public_jwk() | {"kid": "private", "alg": "HS256"}
        keys = parse_jwks(json.dumps({"keys": [rsa_key.public_jwk(), small_jwk, secret, encryption, private,
                                               "junk", {"kty": "RSA"}]}).encode())  # fmt: skip
        assert set(keys.by_kid) == {"ok"}
        assert keys.by_kid["ok"][0].algorithms == frozenset({"RS256"})
        with pytest.raises(ValueError, match="no usable signing key"):
            parse_jwks(json.dumps({"keys": [secret, small_jwk]}).encode())
        with pytest.raises(ValueError, match="not JSON"):
            parse_jwks(b"{")

    def test_api_keys_and_tokens_never_look_alike(self):
        assert not could_be_token("sk_" + "A" * 43)
        assert not could_be_token("sk_abc.def.ghi")  # a key never has a dot, a token header never starts sk_
        assert could_be_token(sign(make_key("ES256"), claims()))


def _certificate_pem(key: Key) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.private.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key.private, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


class TestPemKey:
    """A PEM file (public key or certificate) instead of a JWKS URL."""

    @pytest.mark.parametrize("form", ["public key", "certificate"])
    async def test_a_pem_configured_key_checks_tokens(self, db_url, tmp_path: Path, form):
        key = make_key("RS256", "pem")
        path = tmp_path / "issuer.pem"
        path.write_bytes(key.public_pem() if form == "public key" else _certificate_pem(key))
        settings = jwt_settings(db_url, auth_jwt_public_key_file=str(path))
        async with AsyncTestClient(app=create_app(settings)) as client:
            assert (await client.get("/jobs", headers=bearer(sign(key, claims("alpha"))))).status_code == 200
            import jwt  # noqa: PLC0415

            unnamed = jwt.encode(claims("alpha"), key.private, algorithm="RS256")
            assert (await client.get("/jobs", headers=bearer(unnamed))).status_code == 200
            await assert_unauthorized(
                await client.get("/jobs", headers=bearer(sign(make_key("RS256", "pem"), claims())))
            )
            await assert_unauthorized(
                await client.get("/jobs", headers=bearer(sign(make_key("ES256", "pem"), claims())))
            )


class TestConsole:
    """The web console signs in with a token too; the session ends when the token does."""

    async def test_signing_in_with_a_token_lasts_until_the_tokens_exp(self, api):
        made = await api.create_job(sign(api.rsa, claims("alpha")), name="console-visible")
        assert made.status_code == 201
        expires = int(time.time()) + 600
        token = sign(api.rsa, claims("alpha", exp=expires))
        page = await api.client.get("/ui/login")
        csrf = _CSRF.search(page.text)
        assert csrf is not None
        answer = await api.client.post(
            "/ui/login",
            data={"csrf": csrf.group(1), "key": token, "next": "/ui/jobs"},
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
        jobs = await api.client.get("/ui/jobs")
        assert jobs.status_code == 200
        assert "console-visible" in jobs.text

        cookie = api.client.cookies[session.COOKIE]
        secret = api.client.app.state["console_secret"]
        sealed = session.unseal(secret, cookie, time.time())
        assert sealed is not None
        assert (sealed.namespace, sealed.key_hash, sealed.expires) == ("alpha", "", expires)
        assert session.unseal(secret, cookie, expires + 1) is None

    async def test_a_bad_token_does_not_sign_in(self, api):
        attacks = _attacks(api.rsa, make_key("RS256"))
        for attack in ("wrong audience", "alg none, some signature", "expired an hour ago", "no namespace"):
            page = await api.client.get("/ui/login")
            csrf = _CSRF.search(page.text)
            assert csrf is not None
            answer = await api.client.post("/ui/login", data={"csrf": csrf.group(1), "key": attacks[attack]})
            assert answer.status_code == 401, attack
            assert "not valid" in answer.text
            assert (await api.client.get("/ui/jobs", follow_redirects=False)).status_code in (302, 303)

    async def test_before_any_key_was_fetched_the_sign_in_page_says_to_try_again(self, api):
        api.issuer.body = b"{}"
        page = await api.client.get("/ui/login")
        csrf = _CSRF.search(page.text)
        assert csrf is not None
        token = sign(api.rsa, claims())
        answer = await api.client.post("/ui/login", data={"csrf": csrf.group(1), "key": token})
        assert answer.status_code == 503
        assert "cannot be checked right now" in answer.text
        assert (await api.client.get("/ui/jobs", follow_redirects=False)).status_code in (302, 303)


class TestConfiguration:
    """A JWT setup that could not check a token stops the process at start, naming the variable."""

    OK: ClassVar[dict[str, str]] = {"ISSUER": ISSUER, "AUDIENCE": AUDIENCE}
    BASE: ClassVar[dict[str, str]] = {
        "SCHEDULER_AUTH_JWT_ISSUER": ISSUER,
        "SCHEDULER_AUTH_JWT_AUDIENCE": AUDIENCE,
    }

    def test_without_jwt_variables_tokens_are_off(self):
        settings = load_settings({})
        assert settings.auth_jwt_issuer is None
        assert settings.auth_jwt_algorithms == ("RS256", "ES256")
        assert settings.auth_jwt_namespace_claim == "scheduler_namespace"

    def test_algorithms_are_read_as_a_comma_list_in_any_case(self):
        env = self.BASE | {
            "SCHEDULER_AUTH_JWT_JWKS_URL": "https://idp.test/certs",
            "SCHEDULER_AUTH_JWT_ALGORITHMS": "rs256, ES384 ,eddsa,RS256",
        }
        assert load_settings(env).auth_jwt_algorithms == ("RS256", "ES384", "EdDSA")

    @pytest.mark.parametrize(
        ("short", "variable", "words"),
        [  # variables named without their SCHEDULER_AUTH_JWT_ prefix; OK is issuer and audience
            ({"AUDIENCE": AUDIENCE}, "ISSUER", "required when"),
            ({"JWKS_URL": "https://idp.test/certs"}, "ISSUER", "required"),
            ({"PUBLIC_KEY_FILE": "/etc/issuer.pem"}, "ISSUER", "required"),
            ({"ISSUER": ISSUER, "JWKS_URL": "https://idp.test/c"}, "AUDIENCE", "required"),
            (OK, "JWKS_URL", "SCHEDULER_AUTH_JWT_PUBLIC_KEY_FILE"),
            (OK | {"JWKS_URL": "https://i.test", "PUBLIC_KEY_FILE": "/k.pem"}, "PUBLIC_KEY_FILE", "not both"),
            (OK | {"JWKS_URL": "http://idp.example.com/certs"}, "JWKS_URL", "loopback"),
            (OK | {"JWKS_URL": "ftp://idp.test/certs"}, "JWKS_URL", "https"),
            (OK | {"JWKS_URL": "idp.test/certs"}, "JWKS_URL", "https"),
            (OK | {"JWKS_URL": "https://[::1/certs"}, "JWKS_URL", "https"),
            (OK | {"PUBLIC_KEY_FILE": "/nonexistent/issuer.pem"}, "PUBLIC_KEY_FILE", "cannot read"),
            (OK | {"JWKS_URL": "https://idp.test/c", "NAMESPACE_CLAIM": " ns"}, "NAMESPACE_CLAIM", "spaces"),
            ({"ALGORITHMS": "HS256"}, "ALGORITHMS", "refused"),
            ({"ALGORITHMS": "RS256,HS512"}, "ALGORITHMS", "refused"),
            ({"ALGORITHMS": "none"}, "ALGORITHMS", "refused"),
            ({"ALGORITHMS": "RSA-OAEP"}, "ALGORITHMS", "not a JWT"),
            ({"ALGORITHMS": " , "}, "ALGORITHMS", "at least one"),
            ({"LEEWAY_S": "600"}, "LEEWAY_S", "between"),
            ({"JWKS_TTL_S": "1"}, "JWKS_TTL_S", "between"),
            ({"JWKS_MIN_REFRESH_S": "0"}, "JWKS_MIN_REFRESH_S", "between"),
        ],
    )  # fmt: skip
    def test_a_setup_that_cannot_work_is_a_config_error_naming_the_variable(self, short, variable, words):
        with pytest.raises(ConfigError) as raised:
            load_settings({f"SCHEDULER_AUTH_JWT_{name}": value for name, value in short.items()})
        assert str(raised.value).startswith(f"SCHEDULER_AUTH_JWT_{variable}: "), raised.value
        assert words in str(raised.value)

    def test_loopback_http_is_allowed_for_a_local_issuer(self):
        for url in ("http://127.0.0.1:8080/certs", "http://localhost/certs", "http://[::1]:9/c"):
            assert load_settings(self.BASE | {"SCHEDULER_AUTH_JWT_JWKS_URL": url}).auth_jwt_jwks_url == url

    def test_a_key_file_must_hold_a_key_the_algorithms_can_use(self, tmp_path: Path):
        garbage, weak, rsa_file = tmp_path / "garbage.pem", tmp_path / "weak.pem", tmp_path / "rsa.pem"
        garbage.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
        weak.write_bytes(weak_rsa_key("weak").public_pem())
        rsa_file.write_bytes(make_key("RS256").public_pem())
        cases = [
            (garbage, {}, "SCHEDULER_AUTH_JWT_PUBLIC_KEY_FILE", "no PEM public key"),
            (weak, {}, "SCHEDULER_AUTH_JWT_ALGORITHMS", "2048 bits"),
            (rsa_file, {"SCHEDULER_AUTH_JWT_ALGORITHMS": "ES256"}, "SCHEDULER_AUTH_JWT_ALGORITHMS", "RS256"),
        ]
        for path, extra, variable, words in cases:
            with pytest.raises(ConfigError) as raised:
                load_settings(self.BASE | {"SCHEDULER_AUTH_JWT_PUBLIC_KEY_FILE": str(path)} | extra)
            assert str(raised.value).startswith(f"{variable}: "), raised.value
            assert words in str(raised.value)
        good = load_settings(self.BASE | {"SCHEDULER_AUTH_JWT_PUBLIC_KEY_FILE": str(rsa_file)})
        assert good.auth_jwt_public_key_file == str(rsa_file)
