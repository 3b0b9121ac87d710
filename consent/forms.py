"""The consent pages' forms. They only trim and carry values: every rule (and its message)
lives in ``consent.services``, so the browser form and any scripted POST behave the same."""

from __future__ import annotations

from django import forms


class FlowForm(forms.Form):
    """Carries the flow id. It only names the flow: authority comes from the browser cookie."""

    flow_id = forms.CharField(required=False, strip=True)

    def value(self, name: str) -> str:
        """The trimmed field value. Django refuses NUL characters in form fields; the raw text is
        handed on anyway so the service answers with its own message instead of "missing"."""
        if self.is_valid():
            return self.cleaned_data.get(name, "")
        raw = self.data.get(name, "")
        return raw.strip() if isinstance(raw, str) else ""


class VirtualKeyForm(FlowForm):
    vk = forms.CharField(required=False, strip=True, widget=forms.PasswordInput)


class UserIdForm(FlowForm):
    user_id = forms.CharField(required=False, strip=True)
