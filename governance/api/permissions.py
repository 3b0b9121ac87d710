"""Django model permissions for the management API, with GET needing ``view``."""

from __future__ import annotations

from rest_framework import permissions


class StaffModelPermissions(permissions.DjangoModelPermissions):
    """Staff users only; reads need ``view_<model>``, writes ``add``/``change``/``delete``.

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

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        if not user.is_staff:
            return False
        return super().has_permission(request, view)


class ActionPermission(StaffModelPermissions):
    """For POST verbs that change an object (rotate, reset): need ``change``, not ``add``."""

    perms_map = {**StaffModelPermissions.perms_map, "POST": ["%(app_label)s.change_%(model_name)s"]}
