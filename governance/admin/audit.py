"""The audit trail: a read-only list of every configuration write (``governance.audit`` records
them), newest first. The object's name links to its admin page while the object still exists.

Django's own admin history (``LogEntry``, "History" on each page) is untouched; this list also
holds the writes of the API, the config import and commands, and names changed fields only.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from governance.admin.common import ADMIN_MEDIA_CSS, ModelAdminBase, format_when
from governance.audit import SECRET_NAMES
from governance.models import AuditAction, AuditEntry

# Set on each entry of the page by ``AuditChangeList``: the object's admin URL, or "" when the
# object is gone (or has no admin page).
ADMIN_URL_ATTR = "admin_url"
SECRET_BADGE = mark_safe(' <span class="gov-badge gov-badge-off">secret</span>')  # a constant: nothing to escape
ACTION_BADGES = {AuditAction.CREATED: "ok", AuditAction.CHANGED: "warn", AuditAction.DELETED: "over"}


class AuditChangeList(ChangeList):
    """Finds which objects of the page still exist: one query per object type on the page."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        entries: list[AuditEntry] = list(self.result_list)  # evaluates the page once; the template reuses it
        by_type: dict[int, list[AuditEntry]] = defaultdict(list)
        for entry in entries:
            setattr(entry, ADMIN_URL_ATTR, "")
            if entry.content_type_id is not None:
                by_type[entry.content_type_id].append(entry)
        for rows in by_type.values():
            model = rows[0].content_type.model_class() if rows[0].content_type else None
            if model is None or not self.model_admin.admin_site.is_registered(model):
                continue
            existing = {str(pk) for pk in _existing_pks(model, {row.object_id for row in rows})}
            for row in rows:
                if row.object_id in existing:
                    setattr(row, ADMIN_URL_ATTR, _change_url(model, row.object_id))


def _existing_pks(model: type[Model], ids: set[str]) -> list[Any]:
    pk_field = model._meta.pk
    valid = []
    for value in ids:
        try:
            valid.append(pk_field.to_python(value))
        except ValidationError:
            continue  # an id of another shape cannot name a row of this model
    return list(model._base_manager.filter(pk__in=valid).values_list("pk", flat=True))


def _change_url(model: type[Model], object_id: str) -> str:
    try:
        return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[object_id])
    except NoReverseMatch:
        return ""


class ObjectTypeFilter(admin.SimpleListFilter):
    """The object types that have entries, by their names ("virtual key"), not "app | model"."""

    title = "object type"
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        ids = AuditEntry.objects.exclude(content_type=None).values_list("content_type", flat=True).distinct()
        types = ContentType.objects.filter(pk__in=set(ids))
        return sorted(((str(t.pk), _type_name(t)) for t in types), key=lambda item: item[1])

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditEntry]) -> QuerySet[AuditEntry]:
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(content_type_id=int(value)) if value.isdigit() else queryset.none()


def _type_name(content_type: ContentType | None) -> str:
    model = content_type.model_class() if content_type is not None else None
    return str(model._meta.verbose_name) if model is not None else "—"


@admin.register(AuditEntry)
class AuditEntryAdmin(ModelAdminBase[AuditEntry]):
    """Read-only: entries are written with the changes they record, never edited or deleted here."""

    list_display = ["when", "who", "action_badge", "object_link", "changed"]
    list_filter = ["via", "action", ObjectTypeFilter, "user"]
    search_fields = ["object_repr"]
    search_help_text = "Search by the object's name."
    date_hierarchy = "at"
    list_per_page = 50
    ordering = ["-at", "-id"]
    fields = ("when", "who", "action_badge", "object_link", "changed")
    readonly_fields = fields

    class Media:
        css = {"all": (*ADMIN_MEDIA_CSS["all"], "governance/audit.css")}

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return AuditChangeList

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {"title": "Audit trail", **(extra_context or {})})

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEntry]:
        return super().get_queryset(request).select_related("content_type")

    @admin.display(description="when", ordering="at")
    def when(self, entry: AuditEntry) -> str:
        return format_when(entry.at)

    @admin.display(description="who", ordering="user")
    def who(self, entry: AuditEntry) -> str:
        how = entry.get_via_display()
        if entry.api_token:
            how = f"{how} · token “{entry.api_token}”"
        return format_html('{}<div class="audit-sub">{}</div>', entry.user, how)

    @admin.display(description="action", ordering="action")
    def action_badge(self, entry: AuditEntry) -> str:
        level = ACTION_BADGES.get(AuditAction(entry.action), "off")
        return format_html('<span class="gov-badge gov-badge-{}">{}</span>', level, entry.get_action_display())

    @admin.display(description="object", ordering="object_repr")
    def object_link(self, entry: AuditEntry) -> str:
        url = getattr(entry, ADMIN_URL_ATTR, None)
        if url is None:  # a detail page: not filled in by the changelist
            model = entry.content_type.model_class() if entry.content_type else None
            exists = model is not None and bool(_existing_pks(model, {entry.object_id}))
            url = _change_url(model, entry.object_id) if model is not None and exists else ""
        kind = _type_name(entry.content_type)
        if url:
            return format_html('<div class="audit-sub">{}</div><a href="{}">{}</a>', kind, url, entry.object_repr)
        return format_html(
            '<div class="audit-sub">{}</div>{} <span class="quiet">(no longer exists)</span>', kind, entry.object_repr
        )

    @admin.display(description="changed fields")
    def changed(self, entry: AuditEntry) -> str:
        if not entry.changed_fields:
            return "—"
        return format_html_join(
            ", ",
            '<span class="audit-field">{}{}</span>',
            ((name, SECRET_BADGE if name in SECRET_NAMES else "") for name in entry.changed_fields),
        )
