"""OpenAPI descriptions of the management API's authentication schemes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drf_spectacular.extensions import OpenApiAuthenticationExtension

if TYPE_CHECKING:
    from drf_spectacular.openapi import AutoSchema


class AdminTokenScheme(OpenApiAuthenticationExtension):
    target_class = "governance.api.authentication.AdminTokenAuthentication"
    name = "adminToken"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "admin API token (manage.py create_api_token)"}


class StaffBasicScheme(OpenApiAuthenticationExtension):
    target_class = "governance.api.authentication.StaffBasicAuthentication"
    name = "staffBasic"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {"type": "http", "scheme": "basic", "description": "username and password of a staff user"}
