"""Observability: Prometheus metrics (``metrics``, served by ``exposition`` at ``/metrics``) and
optional OpenTelemetry spans (``tracing``).

A bottom layer: any app may import it, it imports no app at module level (``exposition`` reads
governance's rows when scraped). ``multiproc`` sets up prometheus-client's multiprocess mode for
gunicorn and imports nothing of prometheus-client itself, so ``gunicorn.conf.py`` can use it
before any worker exists. Importing this package imports nothing else.
"""
