import uuid

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0008_model_and_provider_limits"),
    ]

    operations = [
        migrations.CreateModel(
            name="PricingOverride",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=255)),
                (
                    "scope_kind",
                    models.CharField(
                        choices=[
                            ("virtual_key_provider_key", "virtual key + provider key"),
                            ("virtual_key_provider", "virtual key + provider"),
                            ("virtual_key", "virtual key"),
                            ("provider_key", "provider key"),
                            ("provider", "provider"),
                            ("global", "global"),
                        ],
                        default="global",
                        max_length=32,
                    ),
                ),
                (
                    "match_type",
                    models.CharField(
                        choices=[
                            ("exact", "exact model name"),
                            ("wildcard", "prefix (pattern ends with *)"),
                            ("pattern", "glob pattern (* and ?)"),
                        ],
                        default="exact",
                        max_length=16,
                    ),
                ),
                (
                    "pattern",
                    models.CharField(help_text="the model name, a prefix ending with *, or a glob", max_length=255),
                ),
                ("request_types", models.JSONField(blank=True, default=list)),
                (
                    "input_cost_per_token",
                    models.DecimalField(
                        blank=True,
                        decimal_places=15,
                        max_digits=24,
                        null=True,
                        validators=[django.core.validators.MinValueValidator(0)],
                    ),
                ),
                (
                    "output_cost_per_token",
                    models.DecimalField(
                        blank=True,
                        decimal_places=15,
                        max_digits=24,
                        null=True,
                        validators=[django.core.validators.MinValueValidator(0)],
                    ),
                ),
                (
                    "cached_input_cost_per_token",
                    models.DecimalField(
                        blank=True,
                        decimal_places=15,
                        max_digits=24,
                        null=True,
                        validators=[django.core.validators.MinValueValidator(0)],
                    ),
                ),
                (
                    "cost_per_request",
                    models.DecimalField(
                        blank=True,
                        decimal_places=15,
                        max_digits=24,
                        null=True,
                        validators=[django.core.validators.MinValueValidator(0)],
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "provider",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="pricing_overrides",
                        to="governance.provider",
                    ),
                ),
                (
                    "provider_key",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="pricing_overrides",
                        to="governance.providerkey",
                    ),
                ),
                (
                    "virtual_key",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="pricing_overrides",
                        to="governance.virtualkey",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(
                                ("scope_kind", "global"),
                                ("virtual_key__isnull", True),
                                ("provider__isnull", True),
                                ("provider_key__isnull", True),
                            ),
                            models.Q(
                                ("scope_kind", "provider"),
                                ("virtual_key__isnull", True),
                                ("provider__isnull", False),
                                ("provider_key__isnull", True),
                            ),
                            models.Q(
                                ("scope_kind", "provider_key"),
                                ("virtual_key__isnull", True),
                                ("provider__isnull", True),
                                ("provider_key__isnull", False),
                            ),
                            models.Q(
                                ("scope_kind", "virtual_key"),
                                ("virtual_key__isnull", False),
                                ("provider__isnull", True),
                                ("provider_key__isnull", True),
                            ),
                            models.Q(
                                ("scope_kind", "virtual_key_provider"),
                                ("virtual_key__isnull", False),
                                ("provider__isnull", False),
                                ("provider_key__isnull", True),
                            ),
                            models.Q(
                                ("scope_kind", "virtual_key_provider_key"),
                                ("virtual_key__isnull", False),
                                ("provider__isnull", True),
                                ("provider_key__isnull", False),
                            ),
                            _connector="OR",
                        ),
                        name="pricing_override_scope_ids",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("input_cost_per_token__isnull", True), ("input_cost_per_token__gte", 0), _connector="OR"
                        ),
                        name="pricing_override_input_cost_per_token_non_negative",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("output_cost_per_token__isnull", True), ("output_cost_per_token__gte", 0), _connector="OR"
                        ),
                        name="pricing_override_output_cost_per_token_non_negative",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("cached_input_cost_per_token__isnull", True),
                            ("cached_input_cost_per_token__gte", 0),
                            _connector="OR",
                        ),
                        name="pricing_override_cached_input_cost_per_token_non_negative",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("cost_per_request__isnull", True), ("cost_per_request__gte", 0), _connector="OR"
                        ),
                        name="pricing_override_cost_per_request_non_negative",
                    ),
                ],
            },
        ),
        migrations.AddField(
            model_name="usagerecord",
            name="price_source",
            field=models.CharField(
                blank=True,
                help_text="The price the request was charged at: catalog:<provider>/<model> (the price catalog's row), "
                "override:<id> (a pricing override), override:<id>+catalog:<provider>/<model> (an override that leaves "
                "some token price to the catalog row) or upstream (the cost the upstream reported). Empty: unpriced, "
                "or not an inference request (MCP tool calls).",
                max_length=400,
                null=True,
            ),
        ),
    ]
