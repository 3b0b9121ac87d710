"""Provider types: ``api_format`` becomes ``provider_type`` (its two values keep their meaning),
the base URL may be blank (the type's default), and Azure keys carry their endpoint config."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("governance", "0004_counter_leases")]

    operations = [
        migrations.RenameField(model_name="provider", old_name="api_format", new_name="provider_type"),
        migrations.AlterField(
            model_name="provider",
            name="provider_type",
            field=models.CharField(
                choices=[
                    ("openai", "OpenAI"),
                    ("anthropic", "Anthropic"),
                    ("gemini", "Google Gemini (AI Studio)"),
                    ("azure", "Azure OpenAI"),
                    ("groq", "Groq"),
                    ("mistral", "Mistral"),
                    ("xai", "xAI"),
                    ("openrouter", "OpenRouter"),
                    ("together", "Together AI"),
                    ("fireworks", "Fireworks AI"),
                    ("deepseek", "DeepSeek"),
                    ("cerebras", "Cerebras"),
                    ("ollama", "Ollama"),
                    ("vllm", "vLLM"),
                ],
                default="openai",
                max_length=16,
            ),
        ),
        migrations.AlterField(
            model_name="provider", name="base_url", field=models.URLField(blank=True, max_length=500)
        ),
        migrations.AddField(
            model_name="providerkey", name="azure_key_config", field=models.JSONField(blank=True, default=dict)
        ),
    ]
