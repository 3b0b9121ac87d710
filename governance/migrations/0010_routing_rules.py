import uuid

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0009_pricing_overrides"),
    ]

    operations = [
        migrations.CreateModel(
            name="RoutingRule",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=255)),
                ("description", models.TextField(blank=True, default="")),
                ("enabled", models.BooleanField(default=True)),
                ("cel_expression", models.TextField(blank=True, default="")),
                ("targets", models.JSONField(default=list)),
                ("fallbacks", models.JSONField(blank=True, default=list)),
                (
                    "scope",
                    models.CharField(
                        choices=[
                            ("global", "Global"),
                            ("customer", "Customer"),
                            ("team", "Team"),
                            ("virtual_key", "Virtual key"),
                        ],
                        default="global",
                        max_length=16,
                    ),
                ),
                ("scope_id", models.CharField(blank=True, default="", editable=False, max_length=64)),
                ("priority", models.IntegerField(default=0)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "customer",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="routing_rules",
                        to="governance.customer",
                    ),
                ),
                (
                    "team",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="routing_rules",
                        to="governance.team",
                    ),
                ),
                (
                    "virtual_key",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="routing_rules",
                        to="governance.virtualkey",
                    ),
                ),
            ],
            options={
                "ordering": ["scope", "scope_id", "priority", "created_at"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("scope", "scope_id", "name"), name="routing_rule_unique_name_per_scope"
                    )
                ],
            },
        ),
    ]
