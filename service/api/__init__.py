"""HTTP layer: app factory, routers, request and response schemas, the error envelope."""

from service.api.app import create_app

__all__ = ["create_app"]
