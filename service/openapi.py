"""Print the service's OpenAPI schema as YAML: ``python -m service.openapi > openapi.yaml``."""

from __future__ import annotations

import sys
import tempfile


def schema() -> dict:
    from service.api.app import create_app
    from service.config import Settings

    # The schema does not depend on the models; an empty repository is enough to build the app.
    with tempfile.TemporaryDirectory() as repo:
        return create_app(Settings(model_repo=repo, _env_file=None)).openapi()


def dump(spec: dict) -> str:
    import yaml

    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=120)


def main() -> int:
    sys.stdout.write(dump(schema()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
