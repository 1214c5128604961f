"""`python -m controlplane [--host H] [--port P] [--no-migrate]` serves the API; `python -m controlplane migrate`
only applies migrations; `python -m controlplane rotate-secrets` re-encrypts stored secrets with the first key of
ENDPOINTCTL_SECRETS_KEY. Configuration comes from the environment (DATABASE_URL, REDIS_URL, ENDPOINTCTL_*)."""

from __future__ import annotations

import argparse
import logging
import sys

from common.config import get_settings

log = logging.getLogger("controlplane")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controlplane", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "migrate", "rotate-secrets"], default="serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed at start-up)")
    parser.add_argument("--no-migrate", action="store_true",
                        help="do not apply pending migrations at start-up (also ENDPOINTCTL_MIGRATE_ON_START=false)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one line per plugin at every start

    settings = get_settings()
    from controlplane import migrate

    if args.command == "migrate" or (settings.migrate_on_start and not args.no_migrate):
        migrate.upgrade(settings)
        log.info("database schema at %s", migrate.head_revision())
    if args.command == "migrate":
        return 0
    if args.command == "rotate-secrets":
        from common.crypto import SecretsKeyError, keyring_for, rotate_all
        from common.db import get_engine

        try:
            changed = rotate_all(get_engine(settings), keyring_for(settings))
        except SecretsKeyError as exc:
            log.error("%s", exc)
            return 1
        log.info("re-encrypted the secrets of %d endpoints with the first key", changed)
        return 0

    import uvicorn

    from common.errors import CatalogError
    from controlplane.app import create_app

    try:
        app = create_app(settings)
    except CatalogError as exc:  # an operator's hardware or model catalog file: one line, not a traceback
        log.error("%s", exc.message)
        return 1
    # uvicorn would believe X-Forwarded-For from 127.0.0.1 by default, and `private` endpoints decide by the client
    # address: only proxies named in ENDPOINTCTL_FORWARDED_ALLOW_IPS may say who the client is.
    trusted = settings.trusted_proxies
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                access_log=False, timeout_graceful_shutdown=5, proxy_headers=bool(trusted),
                forwarded_allow_ips=trusted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
