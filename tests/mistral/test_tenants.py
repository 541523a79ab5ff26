"""Tenant isolation against a REAL Keystone and a Mistral with authentication on
(fixtures ``keystone``, ``auth_mistral_url``, ``tenants``) and a real Redis: scopes
come from verified identity, never from a shared default."""

from __future__ import annotations

import time
import uuid

import pytest
from mistralclient.api import client as mistral_client_module
from mistralclient.api.base import APIException

from mistral_cache import Cache, ConfigurationError
from mistral_cache.mistral import CachedMistralClient, scope_for
from mistral_cache.mistral.identity import TOKENS
from mistral_cache.mistral.transport import is_mistral_not_found
from tests.mistral.helpers import Requests

pytestmark = pytest.mark.mistral


def definition(name: str, description: str) -> str:
    return f"""---
version: '2.0'
{name}:
  description: {description}
  tasks:
    t:
      action: std.noop
"""


def described(workflow) -> str:
    """The description written into a workflow's definition (whose copy this is)."""
    return workflow.definition.split("description: ", 1)[1].split()[0]


def counted(client):
    client.requests = Requests(client)
    return client


def token_client(url, user, token=None):
    """The common pass-through client: the Mistral URL and the user's bare token."""
    return counted(mistral_client_module.client(mistral_url=url, auth_token=token or user.token()))


def session_client(url, user):
    return counted(mistral_client_module.client(mistral_url=url, session=user.session()))


@pytest.fixture
def cache(redis_url, namespace):
    c = Cache(redis_url, namespace=namespace)
    yield c
    c.close()


@pytest.fixture
def facade_of(auth_mistral_url, keystone, cache):
    def make(client, **kwargs):
        kwargs.setdefault("auth_url", keystone.url)
        return CachedMistralClient(client, cache=cache, **kwargs)

    return make


@pytest.fixture(scope="module")
def shared(auth_mistral_url, tenants):
    """The same workflow name in both projects (different definitions), and an execution in A."""
    name = f"same_{uuid.uuid4().hex[:8]}"
    a = mistral_client_module.client(mistral_url=auth_mistral_url, session=tenants.a_member.session())
    b = mistral_client_module.client(mistral_url=auth_mistral_url, session=tenants.b_member.session())
    a.workflows.create(definition(name, "of-a"))
    b.workflows.create(definition(name, "of-b"))
    execution = a.executions.create(name)
    return {"name": name, "execution": execution.id, "a": a, "b": b}


def test_two_projects_reading_the_same_ids_get_disjoint_entries(auth_mistral_url, tenants, facade_of, shared):
    name, ex_id = shared["name"], shared["execution"]
    a = facade_of(token_client(auth_mistral_url, tenants.a_member))
    b = facade_of(token_client(auth_mistral_url, tenants.b_member))
    assert a.scope == scope_for(tenants.a_member.project_id, auth_mistral_url)
    assert b.scope == scope_for(tenants.b_member.project_id, auth_mistral_url)
    assert described(a.workflows.get(name)) == "of-a"
    assert a.executions.get(ex_id).id == ex_id
    assert [described(w) for w in a.workflows.list() if w.name == name] == ["of-a"]
    # B reads the same ids: its own data, and a 404 for A's execution -- from the server
    before = b.client.requests.total
    assert described(b.workflows.get(name)) == "of-b"
    assert [described(w) for w in b.workflows.list() if w.name == name] == ["of-b"]
    with pytest.raises(APIException) as caught:
        b.executions.get(ex_id)
    assert caught.value.error_code == 404
    assert b.client.requests.total - before == 3, "every read of B went to the server"
    # ... and B's cached 404 is never A's answer
    assert a.executions.get(ex_id).id == ex_id
    # the other order: B caches a 404 for a name A then creates; A is never served B's 404
    later = f"later_{uuid.uuid4().hex[:8]}"
    with pytest.raises(APIException):
        b.workflows.get(later)
    shared["a"].workflows.create(definition(later, "of-a"))
    assert described(a.workflows.get(later)) == "of-a"
    with pytest.raises(APIException):
        b.workflows.get(later)  # still B's own (cached) 404


def test_session_clients_are_scoped_by_the_project_keystone_confirmed(auth_mistral_url, tenants, facade_of, shared):
    a = facade_of(session_client(auth_mistral_url, tenants.a_member))
    b = facade_of(session_client(auth_mistral_url, tenants.b_member))
    assert a.scope == scope_for(tenants.a_member.project_id, auth_mistral_url) != b.scope
    assert described(a.workflows.get(shared["name"])) == "of-a"
    assert described(b.workflows.get(shared["name"])) == "of-b"
    # built by the facade from credentials: the same confirmed scope
    built = CachedMistralClient(
        mistral_url=auth_mistral_url, cache=a.cache, auth_url=tenants.a_member.keystone.url,
        username=tenants.a_member.name, api_key=tenants.a_member.password, project_id=tenants.a_member.project_id,
        user_domain_name="Default",
    )
    assert built.scope == a.scope


def test_a_refreshed_token_of_the_same_project_still_hits(auth_mistral_url, tenants, facade_of, shared):
    user = tenants.a_member
    names = [shared["name"]]
    first = facade_of(token_client(auth_mistral_url, user))
    for n in names:
        first.workflows.get(n)
    first.workflows.list()
    first.executions.get(shared["execution"])
    validations = TOKENS.validations
    refreshed = facade_of(token_client(auth_mistral_url, user))  # a new login: a new token
    assert refreshed.http_client.auth_token != first.http_client.auth_token
    assert refreshed.scope == first.scope
    before = refreshed.client.requests.total
    for n in names:
        assert described(refreshed.workflows.get(n)) == "of-a"
    refreshed.workflows.list()
    refreshed.executions.get(shared["execution"])
    assert refreshed.client.requests.total == before, "every read after the refresh was a hit"
    assert TOKENS.validations == validations + 1, "the new token was validated once, then remembered"
    # a second facade for the same token (one per web request) asks Keystone nothing
    again = facade_of(token_client(auth_mistral_url, user, token=refreshed.http_client.auth_token))
    again.workflows.get(shared["name"])
    assert TOKENS.validations == validations + 1


def test_a_revoked_token_gets_the_servers_401_and_never_cached_data(auth_mistral_url, tenants, keystone, facade_of, shared):
    user = tenants.a_member
    valid = facade_of(token_client(auth_mistral_url, user))
    assert described(valid.workflows.get(shared["name"])) == "of-a"  # cached for project A
    revoked_token = user.token()
    keystone.revoke(revoked_token)
    for token in (revoked_token, "not-a-token-" + uuid.uuid4().hex):
        facade = facade_of(token_client(auth_mistral_url, user, token=token))
        assert facade.scope is None
        for _ in range(2):
            before = facade.client.requests.total
            with pytest.raises(APIException) as caught:
                facade.workflows.get(shared["name"])
            assert caught.value.error_code == 401, caught.value
            assert facade.client.requests.total == before + 1, "the server answered, not the cache"
    # a session whose token plugin re-authenticates with a revoked token: mistralclient
    # turns Keystone's 404 into APIException(404); it is never cached as a missing workflow
    rescoped = counted(mistral_client_module.client(
        mistral_url=auth_mistral_url, auth_token=revoked_token, auth_url=keystone.url, project_id=user.project_id,
    ))
    facade = facade_of(rescoped)
    for _ in range(2):
        with pytest.raises(APIException):
            facade.workflows.get(shared["name"])
    assert described(valid.workflows.get(shared["name"])) == "of-a"


def test_a_token_revoked_after_use_is_asked_about_again_within_the_trust_window(
    auth_mistral_url, tenants, keystone, facade_of, shared,
):
    user = tenants.a_member
    token = user.token()
    facade = facade_of(token_client(auth_mistral_url, user, token=token), identity_ttl=1.0)
    assert described(facade.workflows.get(shared["name"])) == "of-a"
    keystone.revoke(token)
    time.sleep(1.2)  # past the trust window: Keystone is asked again and refuses
    validations, before = TOKENS.validations, facade.client.requests.total
    assert facade.scope is None
    try:
        facade.workflows.get(shared["name"])  # Mistral's own token cache may still accept it
    except APIException as exc:
        assert exc.error_code == 401
    assert TOKENS.validations > validations
    assert facade.client.requests.total == before + 1, "passed to the server, not served from the cache"


def test_reader_and_member_share_entries_where_mistral_shows_them_the_same(auth_mistral_url, tenants, facade_of, shared):
    """Mistral 23's policies treat reader and member alike (admin_or_owner / admin_only):
    same scope, shared entries; an admin-only API refuses both, and nothing is cached."""
    member = facade_of(token_client(auth_mistral_url, tenants.a_member))
    reader = facade_of(token_client(auth_mistral_url, tenants.a_reader))
    assert member.scope == reader.scope
    member.workflows.get(shared["name"])
    member.executions.get(shared["execution"])
    before = reader.client.requests.total
    assert described(reader.workflows.get(shared["name"])) == "of-a"
    assert reader.executions.get(shared["execution"]).id == shared["execution"]
    assert reader.client.requests.total == before
    for facade in (member, reader, member):
        with pytest.raises(APIException) as caught:
            facade.code_sources.list()
        assert caught.value.error_code == 403


def test_an_admins_cross_project_read_is_never_served_to_a_member(auth_mistral_url, tenants, facade_of, shared):
    """The admin and a member of the SAME project: Mistral shows the admin project A's
    execution and lists every project's; the member sees none of it."""
    ex_id = shared["execution"]
    admin = facade_of(token_client(auth_mistral_url, tenants.admin))
    member = facade_of(token_client(auth_mistral_url, tenants.admin_project_member))
    assert admin.scope != member.scope
    assert admin.executions.get(ex_id).project_id == tenants.a_member.project_id
    assert ex_id in [e.id for e in admin.executions.list()]
    assert shared["name"] in [w.name for w in admin.workflows.list()]
    with pytest.raises(APIException) as caught:
        member.executions.get(ex_id)
    assert caught.value.error_code == 404
    assert ex_id not in [e.id for e in member.executions.list()]
    assert shared["name"] not in [w.name for w in member.workflows.list()]
    # every admin shares one scope: the admin's view does not depend on its project
    assert admin.scope == scope_for("anything", auth_mistral_url, admin=True)


def test_a_write_invalidates_the_projects_scope_and_the_admins(auth_mistral_url, tenants, facade_of):
    name = f"w_{uuid.uuid4().hex[:8]}"
    member = facade_of(token_client(auth_mistral_url, tenants.b_member))
    admin = facade_of(token_client(auth_mistral_url, tenants.admin))
    member.workflows.create(definition(name, "v1"))
    assert described(member.workflows.get(name)) == "v1"
    assert [described(w) for w in admin.workflows.list() if w.name == name] == ["v1"]
    member.workflows.update(definition(name, "v2"))
    assert described(member.workflows.get(name)) == "v2"
    assert [described(w) for w in admin.workflows.list() if w.name == name] == ["v2"]


def test_a_bare_token_without_auth_url_is_refused_unless_the_scope_is_explicit(auth_mistral_url, tenants, cache):
    client = mistral_client_module.client(mistral_url=auth_mistral_url, auth_token="t-" + uuid.uuid4().hex)
    with pytest.raises(ConfigurationError, match="auth_url"):
        CachedMistralClient(client, cache=cache)
    with pytest.raises(ConfigurationError):
        CachedMistralClient(mistral_url=auth_mistral_url, auth_token="t-x", cache=cache)
    explicit = CachedMistralClient(client, cache=cache, scope="tenant-x")
    assert explicit.scope == scope_for("tenant-x", auth_mistral_url)
    # auth_url given as mistralclient takes it: the token is passed through, validated for the scope
    user = tenants.b_member
    built = CachedMistralClient(mistral_url=auth_mistral_url, auth_token=user.token(), auth_url=user.keystone.url, cache=cache)
    assert built.scope == scope_for(user.project_id, auth_mistral_url)
    assert built.workflows.list() is not None


def test_scope_for_cannot_be_forged():
    url = "http://127.0.0.1:8989/v2"
    assert scope_for("abc", url) != scope_for("abc", url + "x")
    assert scope_for("abc", url) == scope_for("abc", url + "/")
    forged = scope_for("*admin", url)
    assert forged != scope_for("p", url, admin=True)
    assert "|" not in scope_for("a|b@c", url) and scope_for("a|b@c", url).count("@") == 1


def test_a_session_is_confirmed_again_once_its_trust_window_has_passed(auth_mistral_url, tenants, keystone, facade_of, shared):
    """A keystoneauth session keeps its token for an hour; the facade trusts what Keystone
    said at issue for identity_ttl (at most 300 s), then makes the session log in again --
    and a session whose token can no longer be renewed gets nothing from the cache."""
    user = tenants.a_member
    session = user.session()
    facade = facade_of(counted(mistral_client_module.client(mistral_url=auth_mistral_url, session=session)), identity_ttl=1.0)
    assert described(facade.workflows.get(shared["name"])) == "of-a"
    first_token = session.get_token()
    time.sleep(1.2)
    before = facade.client.requests.total
    assert described(facade.workflows.get(shared["name"])) == "of-a"
    assert facade.client.requests.total == before, "still a hit: same confirmed project"
    assert session.get_token() != first_token, "confirmed by a fresh login"
    # a token plugin over a token that is revoked meanwhile: no renewal, no cached answer
    token = user.token()
    rescoped = counted(mistral_client_module.client(
        mistral_url=auth_mistral_url, auth_token=token, auth_url=keystone.url, project_id=user.project_id,
    ))
    facade = facade_of(rescoped, identity_ttl=1.0)
    assert described(facade.workflows.get(shared["name"])) == "of-a"
    keystone.revoke(token)
    time.sleep(1.2)
    assert facade.scope is None
    with pytest.raises(APIException):
        facade.workflows.get(shared["name"])


def test_the_trust_window_never_outlives_the_token_nor_300_seconds(tenants, keystone):
    from mistral_cache.mistral.identity import TokenIdentities, _parse_expiry, trusted_until

    assert trusted_until(validated_at=100.0, expires_at=105.0, ttl=300.0) == 105.0  # the token's expiry first
    assert trusted_until(validated_at=0.0, expires_at=3600.0, ttl=900.0) == 300.0  # never past token_cache_time
    assert trusted_until(validated_at=0.0, expires_at=float("inf"), ttl=1.0) == 1.0
    assert _parse_expiry("2000-01-01T00:00:00.000000Z") < 0
    # against Keystone, on an injected clock: remembered 300 s at most, whatever ttl asks
    now = [1000.0]
    memory = TokenIdentities(clock=lambda: now[0])
    token = tenants.a_member.token()
    first = memory.lookup(token, keystone.url, ttl=900.0)
    assert first is not None and first.project_id == tenants.a_member.project_id and not first.admin
    assert first.trusted_until == 1300.0
    now[0] = 1299.0
    assert memory.lookup(token, keystone.url).project_id == first.project_id and memory.validations == 1
    assert memory.lookup(token, keystone.url, ttl=10.0) is not None and memory.validations == 2, "a shorter ttl is honoured"
    now[0] = 1299.0 + 300.0  # 300 s after the last validation
    memory.lookup(token, keystone.url, ttl=900.0)
    assert memory.validations == 3
    # admin-ness is each caller's rule over the roles Keystone returned
    assert memory.lookup(token, keystone.url, admin_roles={"member"}).admin


def test_keystone_not_answering_means_nothing_is_cached(auth_mistral_url, tenants, facade_of, shared):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v3"
    facade = facade_of(token_client(auth_mistral_url, tenants.a_member), auth_url=dead)
    validations = TOKENS.validations
    assert facade.scope is None
    for _ in range(3):
        before = facade.client.requests.total
        assert described(facade.workflows.get(shared["name"])) == "of-a"  # Mistral still validates the token itself
        assert facade.client.requests.total == before + 1, "from the server, not the cache"
    assert TOKENS.validations == validations + 1, "a dead Keystone is not retried on every read"


def test_only_mistrals_own_404s_are_cached_as_missing():
    assert is_mistral_not_found(APIException(404, "Workflow not found [workflow_identifier=x, namespace=]"))
    assert not is_mistral_not_found(APIException(404, None))  # keystoneauth's 404 while re-authenticating
    assert not is_mistral_not_found(APIException(404, ""))
    assert not is_mistral_not_found(APIException(404, "Could not find token: abc"))
    assert not is_mistral_not_found(APIException(401, "Auth token is invalid"))
