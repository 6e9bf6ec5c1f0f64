"""Create the stack's secrets on first start and keep them across restarts.

Run by the one-shot `secrets` service before any other service starts. Each secret is a file in the
`secrets` volume (mounted at /run/secrets), owned by the one user that reads it and readable by it
alone: Ray (uid 1000) reads the token through RAY_AUTH_TOKEN_PATH and the Redis password from its
file, Redis (uid 999) reads its `requirepass` from a config file, Grafana (uid 472) reads its admin
password through GF_SECURITY_ADMIN_PASSWORD__FILE. So no secret is on a command line or in
`docker inspect`. A value set in .env (handed to this service only) replaces the stored one; a
stored one is otherwise kept, and a missing one generated.

Alertmanager (uid 65534) reads its whole config from here: alertmanager/alertmanager.yml with the
webhook URL of .env (ALERT_WEBHOOK_URL, which often carries a token) in place, rendered on every
start; Alertmanager 0.25, Debian's, has no `url_file`.

    docker compose exec ray-head cat /run/secrets/ray_auth_token
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

RAY_UID, REDIS_UID, GRAFANA_UID, ALERTMANAGER_UID = 1000, 999, 472, 65534
WEBHOOK_PLACEHOLDER = "${ALERT_WEBHOOK_URL}"
# Printable ASCII without spaces or quotes: Redis's config file would split or unquote others.
ALLOWED = re.compile(r"[!#-&(-~]+")


@dataclass(frozen=True)
class Secret:
    file: str
    env: str  # the .env variable that may set it
    owner: int
    generate: Callable[[], str]


SECRETS = (
    Secret("ray_auth_token", "RAY_AUTH_TOKEN", RAY_UID, lambda: secrets.token_hex(32)),
    Secret("redis_password", "REDIS_PASSWORD", RAY_UID, lambda: secrets.token_hex(24)),
    Secret(
        "grafana_admin_password",
        "GRAFANA_ADMIN_PASSWORD",
        GRAFANA_UID,
        lambda: secrets.token_urlsafe(18),
    ),
)


def write(path: Path, text: str, owner: int) -> None:
    """Replace `path` atomically, readable by `owner` only."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chown(tmp, owner, owner)
    tmp.replace(path)


class SecretError(ValueError):
    """A value from .env that cannot be used as it is."""


def ensure(directory: Path, secret: Secret) -> str:
    """The secret's value: from .env if set there (stored), else the stored one, else a new one."""
    path = directory / secret.file
    wanted = os.environ.get(secret.env, "").strip()
    if wanted and not ALLOWED.fullmatch(wanted):
        raise SecretError(f"{secret.env} in .env may not contain spaces, quotes or non-ASCII")
    stored = path.read_text().strip() if path.is_file() else ""
    if wanted:
        if wanted != stored:
            write(path, wanted, secret.owner)
            print(f"[secrets] {secret.file}: set from {secret.env} in .env", flush=True)
        return wanted
    if stored:
        print(f"[secrets] {secret.file}: kept", flush=True)
        return stored
    value = secret.generate()
    write(path, value, secret.owner)
    print(f"[secrets] {secret.file}: generated", flush=True)
    return value


def alertmanager_config(template: str, url: str) -> str:
    """The routing of `template` with `url` in every webhook that names the placeholder; without
    a URL those webhooks are left out (a receiver without any drops what reaches it)."""
    if url and not re.fullmatch(r"https?://[^\s'\"]+", url):
        raise SecretError("ALERT_WEBHOOK_URL in .env must be an http(s):// URL without spaces")
    config = yaml.safe_load(template)
    for receiver in config.get("receivers") or []:
        hooks = receiver.get("webhook_configs") or []
        for hook in hooks:
            if hook.get("url") == WEBHOOK_PLACEHOLDER:
                hook["url"] = url
        kept = [hook for hook in hooks if hook.get("url")]
        if kept:
            receiver["webhook_configs"] = kept
        else:
            receiver.pop("webhook_configs", None)
    return yaml.safe_dump(config, sort_keys=False)


def main() -> int:
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "/run/secrets")
    template = Path(sys.argv[2] if len(sys.argv) > 2 else "/etc/alertmanager/alertmanager.yml")
    directory.mkdir(parents=True, exist_ok=True)
    try:
        values = {s.file: ensure(directory, s) for s in SECRETS}
        if template.is_file():
            url = os.environ.get("ALERT_WEBHOOK_URL", "").strip()
            rendered = alertmanager_config(template.read_text(), url)
            write(directory / "alertmanager.yml", rendered, ALERTMANAGER_UID)
            where = (
                "to the webhook of ALERT_WEBHOOK_URL" if url else "nowhere (no ALERT_WEBHOOK_URL)"
            )
            print(f"[secrets] alertmanager.yml: alerts go {where}", flush=True)
    except SecretError as exc:
        print(f"[secrets] {exc}", file=sys.stderr, flush=True)
        return 1
    # Redis reads its password from a config file given as its first argument.
    conf = directory / "redis.conf"
    text = f"requirepass {values['redis_password']}\n"
    if not conf.is_file() or conf.read_text() != text:
        write(conf, text, REDIS_UID)
    return 0


if __name__ == "__main__":
    sys.exit(main())
