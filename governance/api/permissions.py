"""Django model permissions for the management API, with GET needing ``view``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework import permissions

if TYPE_CHECKING:
    from rest_framework.request import Request
    from rest_framework.views import APIView


class StaffModelPermissions(permissions.DjangoModelPermissions):
    """Staff users only; reads need ``view_<model>``, creates ``add``, updates and verbs
    (rotate, reset) ``change``, deletes ``delete``.

    A view-only group can therefore list and read but gets 403 on any write.
    """

    perms_map = {
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": [],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "POST": ["%(app_label)s.add_%(model_name)s"],
        "PUT": ["%(app_label)s.change_%(model_name)s"],
        "PATCH": ["%(app_label)s.change_%(model_name)s"],
        "DELETE": ["%(app_label)s.delete_%(model_name)s"],
    }

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        if not user.is_staff:
            return False
        if request.method == "POST" and getattr(view, "action", None) not in (None, "create"):
            # A POST verb on an existing object (rotate, reset) changes it. Decided here rather
            # than by ``@action(permission_classes=...)`` on each verb: a forgotten one must not
            # fall back to ``add``, and a route wired with ``as_view({...})`` rather than by the
            # router would silently ignore an action's own arguments.
            model = self._queryset(view).model
            return user.has_perms(self.get_required_permissions("PUT", model))
        return super().has_permission(request, view)
