"""``python -m service [--model-repo DIR] [--host H] [--port P]``: serve the model repository.

Flags override ``SINDER_*`` environment variables. ``SINDER_WORKERS`` > 1 runs that many
processes behind the one port (``service.workers``). On SIGTERM (or Ctrl-C) readiness turns
false and new requests get 503 for ``drain_delay_s``, then the listener closes, accepted
requests finish (at most ``drain_grace_s``) and the process exits.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

from pydantic import ValidationError


class _DrainingServer:
    """Built lazily so that ``--help`` does not import uvicorn."""

    @staticmethod
    def make(config, service, drain_delay_s: float):
        import uvicorn

        class DrainingServer(uvicorn.Server):
            def handle_exit(self, sig, frame):
                service.begin_draining()
                if self.should_exit or getattr(self, "_drain_timer", None) is not None or drain_delay_s <= 0:
                    return super().handle_exit(sig, frame)
                # Keep answering (503 for new work) so balancers see readiness drop before the port closes.
                self._drain_timer = threading.Timer(drain_delay_s, super().handle_exit, (sig, frame))
                self._drain_timer.daemon = True
                self._drain_timer.start()

        return DrainingServer(config)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service", description="Serve DINOv2 features and defect diagnostics over HTTP.")
    parser.add_argument("--model-repo", help="model repository folder (env SINDER_MODEL_REPO; default model_repo)")
    parser.add_argument("--host", help="address to bind (env SINDER_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (env SINDER_PORT; default 8000)")
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], help="env SINDER_LOG_LEVEL")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from service.config import Settings, settings_error_line, unknown_variables

    unknown = unknown_variables(os.environ)
    if unknown:  # a typo in a setting's name must not start a service without it (e.g. without its API key)
        print(f"error: {'; '.join(unknown)}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in {"model_repo": args.model_repo, "host": args.host, "port": args.port,
                                   "log_level": args.log_level}.items() if v is not None}
    try:
        settings = Settings(**overrides)
    except (ValidationError, ValueError) as exc:
        print(f"error: {settings_error_line(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from service.workers import Supervisor, worker_count

    count = worker_count(settings)
    if count > 1:
        return Supervisor(settings, count).run()
    serve(settings)
    return 0


def serve(settings, sockets=None) -> None:
    """One service process: the app under uvicorn, draining on SIGTERM (on ``sockets`` when given)."""
    import uvicorn

    from service.api.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            timeout_graceful_shutdown=int(max(1, round(settings.drain_grace_s))), access_log=False)
    server = _DrainingServer.make(config, app.state.service, settings.drain_delay_s)
    server.run(sockets=sockets)


if __name__ == "__main__":
    raise SystemExit(main())
