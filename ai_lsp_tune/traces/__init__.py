"""Traces: reading OTLP JSON lines, recognising agent runs, and this server's own exporter."""
