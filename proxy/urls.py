"""No Django URL routes: the inference paths (``/v1/``, ``/openai/``, ``/anthropic/``) are served by
the bare WSGI function in ``proxy.wsgi``, which ``bifrost_site.wsgi`` dispatches to before
Django's handler (see its docstring for why)."""

urlpatterns: list = []
