"""The OpenTelemetry exporter chosen by ``Settings.otel_exporter``.

``none`` (default) installs nothing: the API's tracer stays OpenTelemetry's no-op and the
request middleware skips span work entirely. ``console`` installs the SDK with a console
exporter; ``otlp`` an OTLP/HTTP exporter (``pip install opentelemetry-exporter-otlp``), which
reads the usual ``OTEL_EXPORTER_OTLP_*`` variables; a missing package is an error naming what
to install.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

__all__ = ["configure_tracing"]


def configure_tracing(exporter: str, *, service_name: str = "netsuke") -> bool:
    """Install a tracer provider exporting to ``exporter``; ``False`` for ``none``. Raises
    ``RuntimeError`` with an install hint when the needed package is missing."""
    if exporter == "none":
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    span_exporter: Any
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise RuntimeError(
                "otel_exporter=otlp needs: pip install opentelemetry-exporter-otlp"
            ) from None
        span_exporter = OTLPSpanExporter()
    else:
        raise RuntimeError(f"unknown otel_exporter {exporter!r}: none, console or otlp")
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    return True
