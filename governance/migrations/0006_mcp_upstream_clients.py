"""MCP clients become upstream server connections: how to reach them (connection type, URL or
stdio command), their auth (encrypted headers, OAuth), their tools' allow-list and prices."""

import uuid

from django.core.validators import MinValueValidator
from django.db import migrations, models

from governance.models.mcp import new_mcp_client_id


def fill_client_ids(apps, schema_editor):
    McpClient = apps.get_model("governance", "McpClient")
    for client in McpClient.objects.all():
        client.client_id = uuid.uuid4().hex
        client.auth_type = "per_user_oauth" if client.per_user_oauth else "none"
        client.save(update_fields=["client_id", "auth_type"])


class Migration(migrations.Migration):
    dependencies = [("governance", "0005_provider_types")]

    operations = [
        migrations.AddField(
            model_name="mcpclient", name="client_id", field=models.CharField(max_length=64, null=True, editable=False)
        ),
        migrations.AddField(
            model_name="mcpclient",
            name="auth_type",
            field=models.CharField(
                choices=[
                    ("none", "None"),
                    ("headers", "Headers"),
                    ("oauth", "OAuth (the gateway's own client credentials)"),
                    ("per_user_oauth", "Per-user OAuth"),
                ],
                default="none",
                max_length=16,
            ),
        ),
        migrations.RunPython(fill_client_ids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="mcpclient",
            name="client_id",
            field=models.CharField(
                default=new_mcp_client_id,
                editable=False,
                max_length=64,
                unique=True,
            ),
        ),
        migrations.AlterField(model_name="mcpclient", name="name", field=models.CharField(max_length=63, unique=True)),
        migrations.AddField(
            model_name="mcpclient",
            name="connection_type",
            field=models.CharField(
                choices=[("http", "Streamable HTTP"), ("sse", "SSE (legacy)"), ("stdio", "stdio (a local command)")],
                default="http",
                max_length=8,
            ),
        ),
        migrations.AddField(
            model_name="mcpclient",
            name="connection_string",
            field=models.CharField(blank=True, default="", max_length=2000),
        ),
        migrations.AddField(model_name="mcpclient", name="stdio_config", field=models.JSONField(blank=True, default=dict)),
        migrations.AddField(
            model_name="mcpclient",
            name="headers_encrypted",
            field=models.TextField(blank=True, default="", editable=False),
        ),
        migrations.AddField(model_name="mcpclient", name="oauth_config", field=models.JSONField(blank=True, default=dict)),
        migrations.AddField(
            model_name="mcpclient", name="tools_to_execute", field=models.JSONField(blank=True, default=list)
        ),
        migrations.AddField(
            model_name="mcpclient", name="allowed_extra_headers", field=models.JSONField(blank=True, default=list)
        ),
        migrations.AddField(model_name="mcpclient", name="tool_pricing", field=models.JSONField(blank=True, default=dict)),
        migrations.AddField(
            model_name="mcpclient",
            name="timeout_seconds",
            field=models.FloatField(default=30.0, validators=[MinValueValidator(0.1)]),
        ),
        migrations.AddField(model_name="mcpclient", name="updated_at", field=models.DateTimeField(auto_now=True)),
    ]
