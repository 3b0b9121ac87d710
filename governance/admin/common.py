"""Pieces shared by the governance admin pages: service-backed saving, the one-time secret page,
usage bars.

Every admin save goes through ``governance.services``. The stock admin validates the form and the
inline formsets first (the same ``full_clean()`` the services run), so a service rejection at save
time is rare (a race, or a rule only the service knows). When it happens the whole save is rolled
back and the page is shown again with the service's messages as form errors, never as a 500.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar, cast

from django import forms
from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html, format_html_join

from governance.dashboard.charts import money, usage_level
from governance.metering.live import live_usage
from governance.models import Budget, Customer, ModelConfig, Provider, ProviderConfig, RateLimit, Team, VirtualKey

SECRETS_SESSION_KEY = "governance_one_time_secrets"
ADMIN_MEDIA_CSS = {"all": ("governance/admin.css",)}
CONFLICT_MESSAGE = "The change conflicts with data saved at the same time (for example a duplicate name). Try again."

# What the admin puts on the request and on fetched limit rows (names kept in one place; read back
# with ``getattr`` since neither ``HttpRequest`` nor the models declare them).
SERVICE_ERRORS_ATTR = "_governance_service_errors"
PENDING_SECRETS_ATTR = "_governance_pending_secrets"
LIVE_USAGE_ATTR = "live_usage"
LIVE_TOKENS_ATTR = "live_tokens"
LIVE_REQUESTS_ATTR = "live_requests"

# The rows that own budgets (``owner.budgets``) and a rate limit (``owner.rate_limit``).
LimitOwner: TypeAlias = VirtualKey | Team | Customer | ProviderConfig | ModelConfig | Provider

ModelT = TypeVar("ModelT", bound=Model)
LimitOwnerT = TypeVar("LimitOwnerT", bound=LimitOwner)

if TYPE_CHECKING:
    # django-stubs types ``ModelAdmin`` as generic over its model; the mixins are checked as the
    # ``ModelAdmin`` subclasses they always end up in, so their ``super()`` calls are checked too.
    ModelAdminBase = admin.ModelAdmin
    AdminMixinBase = admin.ModelAdmin
else:

    class ModelAdminBase(admin.ModelAdmin, Generic[ModelT]):
        """``admin.ModelAdmin``, subscriptable at runtime (``django_stubs_ext.monkeypatch()`` is not used)."""

    class AdminMixinBase(Generic[ModelT]):
        """At runtime the admin mixins are plain classes; only their subscript needs ``Generic``."""


class ServiceRejected(Exception):
    """Raised inside a save to abort the admin transaction and show ``error`` on the form."""

    def __init__(self, error: ValidationError):
        super().__init__(str(error))
        self.error = error


def error_items(error: ValidationError) -> list[tuple[str | None, list[str]]]:
    """``(field or None, messages)`` pairs of a ValidationError, whatever its shape."""
    if hasattr(error, "error_dict"):
        return [
            (None if field == NON_FIELD_ERRORS else field, ValidationError(errors).messages)
            for field, errors in error.error_dict.items()
        ]
    return [(None, error.messages)]


@dataclass(frozen=True)
class Services:
    """The service functions a page writes through.

    ``delete`` is ``None`` where no service exists because the model has no invariants beyond
    its own (the stock delete is then the right one); ``update`` is ``None`` on pages that never
    change a row.
    """

    create: Callable[..., Any] | None = None
    update: Callable[..., Any] | None = None
    delete: Callable[..., None] | None = None
    instance: str = ""  # the keyword ``update`` and ``delete`` take the row by (``customer``, ``vk``...)


class ServiceAdminMixin(AdminMixinBase[ModelT]):
    """Saves and deletes through ``services`` and shows a service rejection as form errors.

    A page declares ``services`` and the form fields they take (``service_fields`` on both,
    ``create_fields`` on create only), and overrides ``service_data`` or ``created`` where a
    service takes more than form fields or returns more than the row. A page whose save reshapes
    a parent's list overrides ``save_model`` and declares only ``Services(delete=...)``.

    ``changeform_view`` runs in one transaction; raising out of it rolls back everything the
    services wrote. The view then runs again on the same POST with the errors attached to the
    form's ``clean()``, so the user sees their input with the messages, and nothing was written.
    """

    services = Services()
    service_fields: tuple[str, ...] = ()
    create_fields: tuple[str, ...] = ()

    def service_data(self, form: forms.ModelForm[ModelT], change: bool) -> dict[str, Any]:
        fields = self.service_fields if change else (*self.create_fields, *self.service_fields)
        return {field: form.cleaned_data[field] for field in fields}

    def created(self, request: HttpRequest, result: Any) -> Any:
        """The row in the create service's ``result``; the place to hold a one-time secret."""
        return result

    def save_model(self, request: HttpRequest, obj: ModelT, form: forms.ModelForm[ModelT], change: bool) -> None:
        data = self.service_data(form, change)
        if change:
            self.run_service(_required(self.services.update, "update"), **{self.services.instance: obj}, **data)
        else:
            created = self.run_service(_required(self.services.create, "create"), **data)
            adopt(obj, self.created(request, created))

    def delete_model(self, request: HttpRequest, obj: ModelT) -> None:
        if self.services.delete is None:
            super().delete_model(request, obj)
            return
        self.services.delete(**{self.services.instance: obj})

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ModelT]) -> None:
        if self.services.delete is None:
            super().delete_queryset(request, queryset)
            return
        # A row at a time: each deletion is its own service call (locks, cascades, reconciling
        # the owner's list), which one bulk ``queryset.delete()`` would skip.
        for obj in queryset:
            self.services.delete(**{self.services.instance: obj})

    def run_service(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ValidationError as exc:
            raise ServiceRejected(exc) from None
        except IntegrityError:
            raise ServiceRejected(ValidationError(CONFLICT_MESSAGE)) from None

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceRejected as exc:
            setattr(request, SERVICE_ERRORS_ATTR, exc.error)
            setattr(request, PENDING_SECRETS_ATTR, [])
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(
        self, request: HttpRequest, obj: ModelT | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[ModelT]]:
        form_class = super().get_form(request, obj, change, **kwargs)
        errors: ValidationError | None = getattr(request, SERVICE_ERRORS_ATTR, None)
        if errors is None:
            return form_class
        # ``class RejectedForm(form_class)``, spelled with ``type()``: a base computed at runtime.
        rejected: type[forms.ModelForm[ModelT]] = type(
            "RejectedForm", (_ServiceErrorsForm, form_class), {"service_errors": errors, "__module__": __name__}
        )
        return rejected


class _ServiceErrorsForm(forms.BaseForm):
    """Mixed in before an admin form class: shows ``service_errors`` as the form's errors."""

    service_errors: ValidationError

    def clean(self) -> dict[str, Any] | None:
        cleaned = super().clean()
        for field, messages in error_items(self.service_errors):
            target = field if field in self.fields else None
            prefix = "" if target or field is None else f"{field}: "
            self.add_error(target, [f"{prefix}{message}" for message in messages])
        return cleaned


def _required(func: Callable[..., Any] | None, name: str) -> Callable[..., Any]:
    """The ``name`` service of a page; calling a missing one fails as calling ``None`` always did."""
    if func is None:
        raise TypeError(f"no {name} service is configured for this admin page")
    return func


def adopt(target: Model, created: Model) -> None:
    """Make the admin's unsaved ``target`` instance become the row a service just created.

    The admin keeps using the instance it built from the form (for inlines, the log entry and
    the redirect), while the service built and saved its own.
    """
    for key, value in created.__dict__.items():
        if key != "_state":
            target.__dict__[key] = value
    target._state.adding = False
    target._state.db = created._state.db


def format_when(moment: datetime | None) -> str:
    """The admin's one date format, ``2026-12-07 14:03 UTC``; an em dash for no date."""
    if moment is None:
        return "—"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


# --- one-time secrets ---------------------------------------------------------------------------


def hold_secret(request: HttpRequest, *, label: str, value: str, kind: str, url: str = "") -> None:
    """Keep a freshly generated secret on the request until the whole save has succeeded.

    It reaches the session only in ``response_add``, so a save rolled back after the secret was
    generated never shows a value for a row that does not exist.
    """
    pending: list[dict[str, str]] | None = getattr(request, PENDING_SECRETS_ATTR, None)
    if pending is None:
        pending = []
        setattr(request, PENDING_SECRETS_ATTR, pending)
    pending.append({"label": label, "value": value, "kind": kind, "url": url})


def stash_secrets(request: HttpRequest, secrets: list[dict[str, str]] | None = None) -> bool:
    """Move the held secrets into the session for exactly one read by the one-time page.

    The session (server-side storage) is used rather than ``messages`` (a cookie) or the URL, so
    the value never travels anywhere but the one page that shows it.
    """
    secrets = secrets if secrets is not None else getattr(request, PENDING_SECRETS_ATTR, None)
    if not secrets:
        return False
    request.session[SECRETS_SESSION_KEY] = [*request.session.get(SECRETS_SESSION_KEY, []), *secrets]
    setattr(request, PENDING_SECRETS_ATTR, [])
    return True


def take_secrets(request: HttpRequest) -> list[dict[str, str]]:
    """Read and delete the stashed secrets: a second read returns nothing."""
    return request.session.pop(SECRETS_SESSION_KEY, [])


# --- usage bars ---------------------------------------------------------------------------------


def usage_bar(used: Decimal | int, limit: Decimal | int | None, label: str, fmt: Callable[[Any], str] = str) -> str:
    """One bar: ``label``, a fill coloured by level, and ``used / limit`` (escaped HTML)."""
    if not limit:
        return ""
    fraction = float(used) / float(limit)
    return format_html(
        '<div class="gov-usage" title="{pct} % used">'
        '<span class="gov-usage-label">{label}</span>'
        '<span class="gov-bar"><span class="gov-bar-fill gov-{level}" style="width: {width}%"></span></span>'
        '<span class="gov-usage-text">{used} / {limit}</span></div>',
        pct=f"{fraction * 100:.0f}",
        label=label,
        level=usage_level(fraction),
        width=f"{max(0.0, min(fraction, 1.0)) * 100:.1f}",
        used=fmt(used),
        limit=fmt(limit),
    )


def attach_live_usage(budgets: Iterable[Budget], rate_limits: Iterable[RateLimit]) -> None:
    """Put each row's *live* usage on it for the bars: the current window only, the hot counters
    (Redis) and requests in flight included (``governance.metering.live``). Two queries whatever the count.
    """
    budget_rows, rate_limit_rows = list(budgets), list(rate_limits)
    if not budget_rows and not rate_limit_rows:
        return
    states = live_usage(budget_rows, rate_limit_rows)
    for budget in budget_rows:
        state = states.get(("budget", budget.pk))
        if state is not None:
            setattr(budget, LIVE_USAGE_ATTR, state["usage"])
    for rate_limit in rate_limit_rows:
        state = states.get(("rate_limit", rate_limit.pk))
        if state is not None:
            setattr(rate_limit, LIVE_TOKENS_ATTR, state["tokens"])
            setattr(rate_limit, LIVE_REQUESTS_ATTR, state["requests"])


class LiveUsageChangeList(ChangeList):
    """A changelist that fetches the live usage of every budget and rate limit on the page at once."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # Only ``GovernanceModelAdmin.get_changelist`` makes this changelist.
        model_admin = cast("GovernanceModelAdmin[Model]", self.model_admin)
        budgets: list[Budget] = []
        rate_limits: list[RateLimit] = []
        for row in self.result_list:  # evaluates the page once; the template reuses these rows
            row_budgets, row_rate_limits = model_admin.limits_of(row)
            budgets += row_budgets
            rate_limits += row_rate_limits
        attach_live_usage(budgets, rate_limits)


def budget_bars(budgets: Iterable[Budget]) -> str:
    """A bar per budget (already fetched), or an em dash when there are none."""
    rows = [
        usage_bar(
            getattr(b, LIVE_USAGE_ATTR, b.current_usage),
            b.max_limit,
            b.reset_duration + (" cal." if b.calendar_aligned else ""),
            money,
        )
        for b in budgets
    ]
    return format_html_join("", "{}", ((row,) for row in rows)) if rows else "—"


def rate_limit_bars(rate_limit: RateLimit | None) -> str:
    """Token and request use of a rate limit (already fetched), or an em dash."""
    if rate_limit is None:
        return "—"
    rows: list[str] = []
    if rate_limit.token_max_limit:
        rows.append(
            usage_bar(
                getattr(rate_limit, LIVE_TOKENS_ATTR, rate_limit.token_current_usage),
                rate_limit.token_max_limit,
                f"tok/{rate_limit.token_reset_duration}",
            )
        )
    if rate_limit.request_max_limit:
        rows.append(
            usage_bar(
                getattr(rate_limit, LIVE_REQUESTS_ATTR, rate_limit.request_current_usage),
                rate_limit.request_max_limit,
                f"req/{rate_limit.request_reset_duration}",
            )
        )
    return format_html_join("", "{}", ((row,) for row in rows)) if rows else "—"


def related_rate_limit(obj: LimitOwner) -> RateLimit | None:
    """The owner's rate limit if it has one (reverse one-to-one access raises otherwise)."""
    try:
        return obj.rate_limit
    except obj.__class__.rate_limit.RelatedObjectDoesNotExist:
        return None


class GovernanceModelAdmin(ModelAdminBase[ModelT]):
    """Base for the governance pages: shared CSS, sensible page size, live usage on lists."""

    list_per_page = 50

    def limits_of(self, row: ModelT) -> tuple[list[Budget], list[RateLimit]]:
        """The budgets and rate limits whose bars ``row`` shows (already fetched with the page)."""
        return [], []

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return LiveUsageChangeList

    class Media:
        css = ADMIN_MEDIA_CSS
