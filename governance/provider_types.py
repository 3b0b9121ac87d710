"""Provider types: which wire format each speaks and where it lives by default.

A provider's *type* decides how the gateway talks to it: the wire format of its API (``openai``,
``anthropic`` or ``gemini``: the proxy translates a client's format into it), the credential
header, the URL layout (Azure's deployments), and the default base URL, so that ``groq`` needs
no URL at all. The OpenAI-compatible presets (``groq`` ... ``vllm``) speak OpenAI's wire format
with small differences, listed in ``proxy/translate/quirks.py``.

A provider whose name is a type gets that type unless told otherwise (``gemini`` → ``gemini``);
any other name defaults to ``openai``, the format most self-hosted servers speak.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models


class ProviderType(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    GEMINI = "gemini", "Google Gemini (AI Studio)"
    AZURE = "azure", "Azure OpenAI"
    GROQ = "groq", "Groq"
    MISTRAL = "mistral", "Mistral"
    XAI = "xai", "xAI"
    OPENROUTER = "openrouter", "OpenRouter"
    TOGETHER = "together", "Together AI"
    FIREWORKS = "fireworks", "Fireworks AI"
    DEEPSEEK = "deepseek", "DeepSeek"
    CEREBRAS = "cerebras", "Cerebras"
    OLLAMA = "ollama", "Ollama"
    VLLM = "vllm", "vLLM"


@dataclass(frozen=True, slots=True)
class TypeFacts:
    wire_format: str  # openai | anthropic | gemini
    default_base_url: str  # "" = the operator must give one (or, for Azure, each key its endpoint)


# The base URL is the part before the API's own path: ``/v1/chat/completions`` (OpenAI),
# ``/v1/messages`` (Anthropic), ``/v1beta/models/...`` (Gemini) is appended to it.
TYPES: dict[str, TypeFacts] = {
    ProviderType.OPENAI: TypeFacts("openai", "https://api.openai.com"),
    ProviderType.ANTHROPIC: TypeFacts("anthropic", "https://api.anthropic.com"),
    ProviderType.GEMINI: TypeFacts("gemini", "https://generativelanguage.googleapis.com"),
    ProviderType.AZURE: TypeFacts("openai", ""),
    ProviderType.GROQ: TypeFacts("openai", "https://api.groq.com/openai"),
    ProviderType.MISTRAL: TypeFacts("openai", "https://api.mistral.ai"),
    ProviderType.XAI: TypeFacts("openai", "https://api.x.ai"),
    ProviderType.OPENROUTER: TypeFacts("openai", "https://openrouter.ai/api"),
    ProviderType.TOGETHER: TypeFacts("openai", "https://api.together.xyz"),
    ProviderType.FIREWORKS: TypeFacts("openai", "https://api.fireworks.ai/inference"),
    ProviderType.DEEPSEEK: TypeFacts("openai", "https://api.deepseek.com"),
    ProviderType.CEREBRAS: TypeFacts("openai", "https://api.cerebras.ai"),
    ProviderType.OLLAMA: TypeFacts("openai", ""),
    ProviderType.VLLM: TypeFacts("openai", ""),
}
WIRE_FORMATS = ("openai", "anthropic", "gemini")
AZURE_DEFAULT_API_VERSION = "2024-10-21"


def default_type(name: str) -> str:
    """The type a provider called ``name`` gets when none is given."""
    return name if name in TYPES else ProviderType.OPENAI


def wire_format(provider_type: str) -> str:
    facts = TYPES.get(provider_type)
    return facts.wire_format if facts else "openai"


def default_base_url(provider_type: str) -> str:
    facts = TYPES.get(provider_type)
    return facts.default_base_url if facts else ""


def base_url_problem(provider_type: str, base_url: str) -> str | None:
    """Why a provider of this type cannot have this (possibly empty) base URL, or None."""
    if base_url or default_base_url(provider_type) or provider_type == ProviderType.AZURE:
        return None
    return f"is required for a provider of type '{provider_type}' (it has no default URL)"


def azure_key_config_problem(value: object) -> tuple[str, str] | None:
    """``(field, message)`` for what is wrong with an Azure key's ``azure_key_config``, or None.

    Shape (Bifrost's): ``{"endpoint": "https://<resource>.openai.azure.com", "api_version":
    "2024-10-21", "deployments": {"gpt-4o": "my-gpt4o-deployment"}}``; ``api_version`` and
    ``deployments`` are optional (a model without a deployment is called by its own name).
    """
    if not isinstance(value, dict):
        return "", "must be an object with endpoint, api_version and deployments"
    unknown = sorted(set(value) - {"endpoint", "api_version", "deployments"})
    if unknown:
        return unknown[0], "is not a field of azure_key_config (endpoint, api_version, deployments)"
    endpoint = value.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")) or len(endpoint) > 500:
        return "endpoint", "is required: the resource's http(s) URL, e.g. https://my-resource.openai.azure.com"
    version = value.get("api_version")
    if version is not None and (not isinstance(version, str) or not version.strip() or len(version) > 64):
        return "api_version", "must be a non-empty string such as '2024-10-21'"
    deployments = value.get("deployments")
    if deployments is not None:
        if not isinstance(deployments, dict):
            return "deployments", "must be an object of model name to deployment name"
        for model, deployment in deployments.items():
            if not model or not isinstance(deployment, str) or not deployment.strip() or "/" in deployment:
                return f"deployments.{model}", "must be a non-empty deployment name without '/'"
    return None
