"""Serving logic that knows nothing of HTTP (no FastAPI imports here)."""
