"""The audit trail's recording: who is acting, and one ``AuditEntry`` per configuration write.

``governance.signals`` connects the handlers below to every configuration model, so whatever
writes one (a service called by the API, the admin, the config import, a command, a shell) leaves
an entry, in the transaction of the write: a rolled-back write leaves none.

Who is acting comes from a context variable, in this order:

1. ``acting_as(...)``: the config import and the commands that write configuration say so;
2. the request being served, set by ``AuditActorMiddleware``: the admin's user, or the API's
   (DRF puts the authenticated user and the API token on the Django request);
3. ``manage.py <command>`` when the process is a management command;
4. otherwise "system".

Changed fields are found by reading the row as stored just before the save (one indexed read per
update: these writes are rare). Only names are recorded; secret columns are named by what they
hold ("value", "headers") and never by their stored form.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured, ObjectDoesNotExist, ValidationError
from django.db.models import Field, Model
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from governance import crypto
from governance.dashboard.charts import money
from governance.models import ApiToken, AuditAction, AuditEntry, Budget, Via

# Columns that hold a secret (as a digest, the last characters or ciphertext) -> the name shown.
SECRET_FIELDS = {
    "value_digest": "value",
    "value_last4": "value",
    "value_encrypted": "value",
    "headers_encrypted": "headers",
    "secret_encrypted": "secret",
    "token_digest": "token",
    "token_last4": "token",
}
SECRET_NAMES = frozenset(SECRET_FIELDS.values())
# Rows that belong to an owner are named with it: "$10 / 1d on virtual key alice-key".
OWNER_FIELDS = ("virtual_key", "provider_config", "team", "customer", "model_config", "provider")
OWNED_MODELS = frozenset({"budget", "ratelimit", "providerconfig"})
# Written on the instance between pre_save / pre_delete and the post_ signal.
_OLD_ATTR = "_audit_old_values"
_REPR_ATTR = "_audit_repr"


@dataclass(frozen=True)
class Actor:
    user: str
    via: str
    api_token: str = ""


SYSTEM = Actor(user="system", via=Via.SYSTEM)

_explicit: ContextVar[Actor | None] = ContextVar("governance_audit_actor", default=None)
_request: ContextVar[HttpRequest | None] = ContextVar("governance_audit_request", default=None)


def current_actor() -> Actor:
    """Who is writing now (see the module doc for the order)."""
    explicit = _explicit.get()
    if explicit is not None:
        return explicit
    request = _request.get()
    if request is not None:
        return _actor_of_request(request)
    return _command_actor() or SYSTEM


@contextmanager
def acting_as(*, via: str, user: str | None = None, user_when_unknown: str = "") -> Iterator[Actor]:
    """Writes inside are recorded as made ``via`` this channel, by ``user`` (by default the actor
    already known, e.g. the command that runs an import; ``user_when_unknown`` when there is none)."""
    current = current_actor()
    if user is not None:
        actor = Actor(user=user, via=via)
    elif current is SYSTEM and user_when_unknown:
        actor = Actor(user=user_when_unknown, via=via)
    else:
        actor = replace(current, via=via)
    token = _explicit.set(actor)
    try:
        yield actor
    finally:
        _explicit.reset(token)


class AuditActorMiddleware:
    """Makes the request being served known to ``current_actor`` while it is served.

    The user is read when a write happens, not here: the API authenticates inside its view
    (DRF then sets ``user`` and ``auth`` on this very request).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)


def _actor_of_request(request: HttpRequest) -> Actor:
    user = getattr(request, "user", None)
    name = user.get_username() if user is not None and user.is_authenticated else "anonymous"
    auth = getattr(request, "auth", None)
    token = auth.name if isinstance(auth, ApiToken) else ""
    via = Via.ADMIN if request.path.startswith(reverse("admin:index")) else Via.API
    return Actor(user=name, via=via, api_token=token)


def _command_actor() -> Actor | None:
    argv = sys.argv
    if len(argv) > 1 and os.path.basename(argv[0]) in ("manage.py", "django-admin") and argv[1] != "runserver":
        return Actor(user=f"manage.py {argv[1]}", via=Via.COMMAND)
    return None


# --- naming and comparing -------------------------------------------------------------------


def describe(instance: Model) -> str:
    """The object's name as a person reads it; a limit or provider config names its owner too."""
    try:
        # A budget's own str() shows every stored decimal: "$10.0000000000 / 1d".
        text = (
            f"{money(instance.max_limit)} / {instance.reset_duration}"
            if isinstance(instance, Budget)
            else str(instance)
        )
        if instance._meta.model_name in OWNED_MODELS:
            for name in OWNER_FIELDS:
                if getattr(instance, f"{name}_id", None) is not None:
                    owner = getattr(instance, name)
                    text = f"{text} on {owner._meta.verbose_name} {owner}"
                    break
    except ObjectDoesNotExist:
        text = f"{instance._meta.verbose_name} {instance.pk}"
    return text[: AuditEntry._meta.get_field("object_repr").max_length]


def _compared_fields(model: type[Model]) -> list[Field[Any, Any]]:
    # Timestamps the ORM sets on every save say nothing about what the writer changed.
    return [
        field
        for field in model._meta.concrete_fields
        if not field.primary_key and not getattr(field, "auto_now", False) and not getattr(field, "auto_now_add", False)
    ]


def _public_names(names: Iterable[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        shown = SECRET_FIELDS.get(name, name)
        if shown not in out:
            out.append(shown)
    return out


def _differs(field: Field[Any, Any], old: Any, new: Any) -> bool:
    if field.name.endswith("_encrypted") and old and new and old != new:
        # Encryption is randomised: the same secret stored again (a re-import) is new ciphertext.
        try:
            return crypto.decrypt(old) != crypto.decrypt(new)
        except ImproperlyConfigured:  # a row the current key cannot read: count it as changed
            return True
    try:
        new = field.to_python(new)
    except ValidationError:
        return True
    return bool(old != new)


# --- the signal handlers (connected by ``governance.signals``) --------------------------------


def remember_old_values(
    sender: type[Model], instance: Model, using: str, update_fields: Iterable[str] | None = None, **kwargs: Any
) -> None:
    """pre_save: the stored row's values of the fields this save writes."""
    if instance._state.adding or instance.pk is None:
        return
    fields = _compared_fields(sender)
    if update_fields is not None:
        wanted = set(update_fields)
        fields = [f for f in fields if f.name in wanted or f.attname in wanted]
    old = sender._base_manager.using(using).filter(pk=instance.pk).values(*[f.attname for f in fields]).first()
    setattr(instance, _OLD_ATTR, (fields, old))


def record_save(sender: type[Model], instance: Model, created: bool, using: str, **kwargs: Any) -> None:
    """post_save: "created", or "changed" with the names of the fields whose value changed."""
    remembered = instance.__dict__.pop(_OLD_ATTR, None)
    if created:
        _write(using, instance, AuditAction.CREATED, [])
        return
    if remembered is None or remembered[1] is None:
        # Saved without a stored row read first (an unsaved object given an existing key): what
        # changed is not known, that it changed is.
        _write(using, instance, AuditAction.CHANGED, [])
        return
    fields, old = remembered
    changed = [f.name for f in fields if _differs(f, old[f.attname], getattr(instance, f.attname))]
    if changed:  # a save that changed nothing is no change
        _write(using, instance, AuditAction.CHANGED, _public_names(changed))


def remember_name(sender: type[Model], instance: Model, **kwargs: Any) -> None:
    """pre_delete: the name, while the owner it mentions still exists (a cascade deletes both)."""
    setattr(instance, _REPR_ATTR, describe(instance))


def record_delete(sender: type[Model], instance: Model, using: str, **kwargs: Any) -> None:
    _write(using, instance, AuditAction.DELETED, [], name=instance.__dict__.pop(_REPR_ATTR, None))


def record_m2m(field_name: str) -> Callable[..., None]:
    """m2m_changed of ``field_name``: a "changed" entry naming that field on each forward row."""

    def handler(
        sender: type[Model],
        instance: Model,
        action: str,
        reverse: bool,
        model: type[Model],
        pk_set: set[Any] | None,
        using: str,
        **kwargs: Any,
    ) -> None:
        if action not in ("post_add", "post_remove", "post_clear"):
            return
        if action != "post_clear" and not pk_set:
            return  # ``set()`` with nothing to add or remove
        if not reverse:
            _write(using, instance, AuditAction.CHANGED, [field_name])
            return
        # From the other side: each row of ``model`` named in ``pk_set`` had its field changed
        # (a reverse clear names none, and nothing here calls one).
        for row in model._base_manager.using(using).filter(pk__in=pk_set or ()):
            _write(using, row, AuditAction.CHANGED, [field_name])

    return handler


def _write(using: str, instance: Model, action: str, fields: list[str], *, name: str | None = None) -> None:
    actor = current_actor()
    AuditEntry.objects.using(using).create(
        user=actor.user[:255],
        api_token=actor.api_token[:255],
        via=actor.via,
        action=action,
        content_type=ContentType.objects.db_manager(using).get_for_model(instance, for_concrete_model=True),
        object_id=str(instance.pk),
        object_repr=name if name is not None else describe(instance),
        changed_fields=fields,
    )
