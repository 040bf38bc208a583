"""Minimal Django project: SSE fan-out over Redis pub/sub, the setup ssehub replaces."""
