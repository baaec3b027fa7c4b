"""Thin arq entry points, one module per lane (WorkerSettings only, no logic)."""
