"""Consent services called directly: once-only gates, expiry with an explicit clock, purge."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.utils import timezone

from consent import services
from consent.exceptions import FlowRejected, IdentityRejected, OAuthError
from consent.models import AuthorizationCode, ConsentFlow, ConsentSession, FlowStatus, Identity
from consent.selectors import consent_session_for_access_token
from tests.consent.conftest import REDIRECT_URI

T0 = timezone.now()


def start(oauth_client, pkce, now=T0) -> ConsentFlow:
    flow, _secret = services.consent_flow_start(
        response_type="code",
        client_id=oauth_client.client_id,
        redirect_uri=REDIRECT_URI,
        code_challenge=pkce.challenge,
        code_challenge_method="S256",
        state="s",
        now=now,
    )
    return flow


@pytest.mark.django_db
def test_flow_expires_after_exactly_15_minutes(oauth_client, pkce, vk):
    flow = start(oauth_client, pkce)
    services.consent_flow_set_virtual_key(flow=flow, value=vk.value, now=T0 + timedelta(seconds=899))
    with pytest.raises(FlowRejected) as info:
        services.consent_flow_set_user_id(flow=flow, user_id="x", now=T0 + timedelta(seconds=900))
    assert (info.value.status, info.value.message) == (400, "Invalid or expired consent flow")
    with pytest.raises(FlowRejected) as info:
        services.consent_flow_submit(flow=flow, now=T0 + timedelta(seconds=900))
    assert info.value.status == 410


@pytest.mark.django_db
def test_submit_with_a_stale_flow_object_still_happens_once(oauth_client, pkce, vk):
    flow = start(oauth_client, pkce)
    services.consent_flow_set_virtual_key(flow=flow, value=vk.value, now=T0)
    stale_copy = ConsentFlow.objects.get(pk=flow.pk)
    services.consent_flow_submit(flow=flow, now=T0)
    with pytest.raises(FlowRejected) as info:
        services.consent_flow_submit(flow=stale_copy, now=T0)
    assert (info.value.status, info.value.message) == (409, "Consent flow has already been submitted")
    assert AuthorizationCode.objects.count() == 1


@pytest.mark.django_db
def test_identity_chosen_in_another_tab_is_the_one_granted(oauth_client, pkce, vk):
    flow = start(oauth_client, pkce)
    services.consent_flow_set_virtual_key(flow=flow, value=vk.value, now=T0)
    other_tab = ConsentFlow.objects.get(pk=flow.pk)
    services.consent_flow_set_user_id(flow=other_tab, user_id="carol", now=T0)
    services.consent_flow_submit(flow=flow, now=T0)  # ``flow`` still says VK in memory
    session = ConsentSession.objects.get()
    assert (session.identity, session.user_id, session.virtual_key_id) == (Identity.USER_ID, "carol", None)


@pytest.mark.django_db
def test_refused_submit_rolls_back_and_leaves_the_flow_pending(oauth_client, pkce):
    flow = start(oauth_client, pkce)
    with pytest.raises(IdentityRejected):
        services.consent_flow_submit(flow=flow, now=T0)
    assert ConsentFlow.objects.get(pk=flow.pk).status == FlowStatus.PENDING


@pytest.mark.django_db
def test_skip_identity_is_refused_at_submit_once_enforcement_is_switched_on(oauth_client, pkce, settings):
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = False
    flow = start(oauth_client, pkce)
    services.consent_flow_skip(flow=flow, now=T0)
    settings.GOVERNANCE_ENFORCE_VIRTUAL_KEYS = True
    with pytest.raises(IdentityRejected, match="Skipping is not allowed"):
        services.consent_flow_submit(flow=flow, now=T0)


def _issue(oauth_client, pkce, vk, now=T0) -> str:
    flow = start(oauth_client, pkce, now=now)
    services.consent_flow_set_virtual_key(flow=flow, value=vk.value, now=now)
    location = services.consent_flow_submit(flow=flow, now=now)
    return location.split("code=")[1].split("&")[0]


@pytest.mark.django_db
def test_code_lives_five_minutes_and_the_token_lives_as_long_as_the_session(oauth_client, pkce, vk):
    code = _issue(oauth_client, pkce, vk)
    with pytest.raises(OAuthError, match="expired"):
        services.authorization_code_redeem(
            code=code,
            code_verifier=pkce.verifier,
            client_id=oauth_client.client_id,
            redirect_uri=REDIRECT_URI,
            now=T0 + timedelta(minutes=5),
        )
    code = _issue(oauth_client, pkce, vk)
    token, expires_in = services.authorization_code_redeem(
        code=code,
        code_verifier=pkce.verifier,
        client_id=oauth_client.client_id,
        redirect_uri=REDIRECT_URI,
        now=T0 + timedelta(minutes=4),
    )
    assert expires_in == 24 * 3600 - 4 * 60
    assert consent_session_for_access_token(token, now=T0 + timedelta(hours=23)) is not None
    assert consent_session_for_access_token(token, now=T0 + timedelta(hours=24)) is None


@pytest.mark.django_db
def test_token_stops_working_when_its_key_is_deleted_or_the_session_revoked(oauth_client, pkce, vk):
    code = _issue(oauth_client, pkce, vk, now=timezone.now())
    token, _ = services.authorization_code_redeem(
        code=code, code_verifier=pkce.verifier, client_id=oauth_client.client_id, redirect_uri=REDIRECT_URI
    )
    session = consent_session_for_access_token(token)
    assert services.consent_sessions_revoke(session_ids=[session.pk]) == 1
    assert consent_session_for_access_token(token) is None
    vk.delete()
    assert not ConsentSession.objects.exists()


@pytest.mark.django_db
def test_purge_deletes_only_expired_state(oauth_client, pkce, vk, capsys):
    now = timezone.now()
    old = now - timedelta(days=2)
    _issue(oauth_client, pkce, vk, now=old)  # flow, code and session all long expired
    live_flow = start(oauth_client, pkce, now=now)
    _issue(oauth_client, pkce, vk, now=now)  # live flow, code and session
    assert (ConsentFlow.objects.count(), AuthorizationCode.objects.count(), ConsentSession.objects.count()) == (3, 2, 2)

    call_command("purge_consent_state")

    assert "purged 1 flow(s), 1 code(s), 1 session(s)" in capsys.readouterr().out
    assert ConsentFlow.objects.count() == 2 and ConsentFlow.objects.filter(pk=live_flow.pk).exists()
    assert AuthorizationCode.objects.get().expires_at > now
    assert ConsentSession.objects.get().expires_at > now


@pytest.mark.django_db
def test_purge_keeps_a_live_session_whose_flow_has_expired(oauth_client, pkce, vk):
    now = timezone.now()
    _issue(oauth_client, pkce, vk, now=now - timedelta(hours=1))
    counts = services.consent_state_purge(now=now)
    assert counts == {"flows": 1, "codes": 1, "sessions": 0}
    session = ConsentSession.objects.get()
    assert session.flow_id is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="real concurrent transactions need PostgreSQL")
def test_racing_submits_from_threads_issue_exactly_one_code(oauth_client, pkce, vk):
    flow = start(oauth_client, pkce, now=timezone.now())
    services.consent_flow_set_virtual_key(flow=flow, value=vk.value)
    barrier = threading.Barrier(6)
    outcomes: list[object] = []

    def submit() -> None:
        try:
            barrier.wait()
            outcomes.append(services.consent_flow_submit(flow=ConsentFlow.objects.get(pk=flow.pk)))
        except FlowRejected as exc:
            outcomes.append(exc.status)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o for o in outcomes if isinstance(o, int)) == [409] * 5
    assert AuthorizationCode.objects.count() == 1
