"""The configuration files of the test servers, rewritten at every start.

``mistral.conf`` may hold the Keystone admin password, the database password
and the events receiver's bearer token, so it is written 0600; so is the
publisher plugin's ``mistral-cache.conf`` (its Redis URL may carry a password).
Nothing secret is ever passed on a command line. ``keystone.conf`` holds no secret (the admin
password only reaches ``keystone-manage bootstrap``, in its environment).
"""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from .common import HOST, write_private

__all__ = [
    "PLUGIN_NAMESPACE", "PLUGIN_TYPE", "PUBLISHER_CONFIG_VARIABLE", "KeystoneAuth", "Notify", "Plugin",
    "render_mistral_config", "render_publisher_config", "write_keystone_config", "write_mistral_config", "write_publisher_config",
]

KEY_REPOSITORIES = ("fernet-tokens", "fernet-receipts", "credential-keys")


@dataclass(frozen=True)
class KeystoneAuth:
    """The Keystone a Mistral server authenticates against, as its ``admin``."""

    url: str
    password: str = field(repr=False)
    token_cache_time: int | None = None  # [keystone_authtoken]; None: keystonemiddleware's 300 s


@dataclass(frozen=True)
class Notify:
    """The events receiver Mistral's notifier posts every state change to."""

    url: str
    token: str = field(repr=False)


#: Where the publisher plugin (mistral_cache.mistral.events.publisher) reads its settings.
PUBLISHER_CONFIG_VARIABLE = "MISTRAL_CACHE_PUBLISHER_CONFIG"
#: Its entry point in ``mistral.notification.publishers`` (setup.cfg), the ``type`` in ``notify``.
PLUGIN_NAMESPACE = "mistral.notification.publishers"
PLUGIN_TYPE = "mistral_cache"


@dataclass(frozen=True)
class Plugin:
    """This project's publisher plugin, run by Mistral's notifier inside the engine.

    Its settings go to its own 0600 file (``$MISTRAL_CACHE_PUBLISHER_CONFIG`` in the
    server's environment), not into ``notify``: the engine copies ``notify`` into
    every execution's ``params``, which any reader of the execution sees."""

    redis_url: str  # without a password
    namespace: str = "default"
    password: str | None = field(default=None, repr=False)

    def url_with_password(self) -> str:
        if not self.password:
            return self.redis_url
        parts = urllib.parse.urlsplit(self.redis_url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError("a Redis password goes into a redis:// or rediss:// URL only")
        user = urllib.parse.quote(urllib.parse.unquote(parts.username or ""), safe="")
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = f"{user}:{urllib.parse.quote(self.password, safe='')}@{host}"
        if parts.port:
            netloc += f":{parts.port}"
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def render_publisher_config(plugin: Plugin, mistral_url: str) -> str:
    """The plugin's ``[publisher]`` section. ConfigParser interpolates ``%``: doubled."""

    def value(text: str) -> str:
        if "\n" in text or "\r" in text:
            raise ValueError("a publisher setting holds a line break")
        return text.replace("%", "%%")

    return (
        "# Written by scripts/mistral-server; rewritten at every start.\n"
        "[publisher]\n"
        f"redis_url = {value(plugin.url_with_password())}\n"
        f"namespace = {value(plugin.namespace)}\n"
        f"mistral_url = {value(mistral_url)}\n"
    )


def write_publisher_config(path: Path, plugin: Plugin, mistral_url: str) -> None:
    """Write the plugin's ``mistral-cache.conf`` (0600: the Redis URL may hold a password)."""
    write_private(path, render_publisher_config(plugin, mistral_url))


def _policy(workdir: Path, keystone: KeystoneAuth | None) -> Path:
    policy_file = workdir / "policy.yaml"
    if keystone:
        policy_file.write_text("{}\n")  # real identities: Mistral's own policy defaults apply unchanged
    else:
        # Without Keystone no request is admin, so the admin-only APIs would answer 403.
        policy_file.write_text('"admin_only": "@"\n')
    return policy_file


def render_mistral_config(
    port: int,
    backend: str,
    policy_file: Path,
    database_url: str,
    transport_url: str,
    keystone: KeystoneAuth | None = None,
    notify: Notify | None = None,
    plugin: Plugin | None = None,
) -> str:
    """The text of ``mistral.conf``.

    Topics and the exchange carry the port: servers sharing one RabbitMQ vhost
    (two test sessions, two engineers) must not take each other's RPC messages.
    With a receiver or the plugin the engine runs the notifier itself (and waits
    for each POST, or for the plugin's Redis writes).
    """
    suffix = f"_{port}"
    executor_type = "local" if backend == "sqlite" else "remote"
    notifier_type = "local" if backend == "sqlite" or notify or plugin else "remote"
    text = f"""\
# Written by scripts/mistral-server; rewritten at every start.
[DEFAULT]
transport_url = {transport_url}
control_exchange = mistral_cache{suffix}
use_stderr = true
debug = false
graceful_shutdown_timeout = 5

[api]
host = {HOST}
port = {port}

[pecan]
auth_enable = {"true" if keystone else "false"}

[oslo_policy]
# Without Keystone no request is admin, so the admin-only APIs (code sources,
# dynamic actions, ...) would answer 403; open them on this test server.
policy_file = {policy_file}

[database]
connection = {database_url}

[engine]
topic = mistral_engine{suffix}

[executor]
type = {executor_type}
topic = mistral_executor{suffix}

[event_engine]
topic = mistral_event_engine{suffix}

[scheduler]
# Fast for tests: poll delayed calls every 0.1 s (default 1 s).
fixed_delay = 0.1
random_delay = 0

[cron_trigger]
# Cron triggers run in the periodic component, not in the API (deprecated).
run_in_api = false

[notifier]
type = {notifier_type}
topic = mistral_notifier{suffix}
"""
    publishers: list[dict[str, object]] = []
    if plugin:
        # The plugin takes no parameters here (they would be copied into every
        # execution's params): it reads $MISTRAL_CACHE_PUBLISHER_CONFIG. It comes
        # first: the engine calls publishers one after another, and the plugin's
        # Redis calls (about a millisecond) delay a webhook's POST far less than
        # waiting for that POST would delay the plugin.
        publishers.append({"type": PLUGIN_TYPE})
    if notify:
        # Every execution's state changes, posted to the events receiver. The token
        # comes from a file into this 0600 config (Mistral also copies it into each
        # execution's params: it is a low-trust secret, the receiver only invalidates).
        publishers.append({"type": "webhook", "url": notify.url, "headers": {"Authorization": "Bearer " + notify.token}})
    if publishers:
        text += f"notify = {json.dumps(publishers)}\n"
    if notify:
        text += """
[action_std_http]
# The default deny-list holds loopback, where the test receiver listens.
denied_cidrs =
"""
    if keystone:
        text += f"""
[keystone_authtoken]
www_authenticate_uri = {keystone.url}
auth_url = {keystone.url}
auth_type = password
username = admin
password = {keystone.password}
project_name = admin
user_domain_name = Default
project_domain_name = Default
"""
        if keystone.token_cache_time is not None:
            text += f"token_cache_time = {keystone.token_cache_time:d}\n"
    return text


def write_mistral_config(
    path: Path,
    port: int,
    backend: str,
    workdir: Path,
    database_url: str,
    transport_url: str,
    keystone: KeystoneAuth | None = None,
    notify: Notify | None = None,
    plugin: Plugin | None = None,
) -> None:
    """Write ``mistral.conf`` (0600) and the policy file next to it."""
    policy_file = _policy(workdir, keystone)
    write_private(path, render_mistral_config(port, backend, policy_file, database_url, transport_url, keystone, notify, plugin))


_KEYSTONE_CONF = """\
# Written by scripts/keystone-server; rewritten at every start.
[DEFAULT]
use_stderr = true
debug = false

[database]
connection = sqlite:///{database}

[token]
provider = fernet

[fernet_tokens]
key_repository = {keys}/fernet-tokens

[fernet_receipts]
key_repository = {keys}/fernet-receipts

[credential]
key_repository = {keys}/credential-keys

[identity]
# Test users only: the cheapest bcrypt cost, so a password login takes
# milliseconds instead of a quarter of a second on a small VM.
password_hash_rounds = 4
"""

# gunicorn serves this module; oslo.config parses sys.argv, so gunicorn's own
# arguments must not reach it.
_WSGI_MODULE = """\
# Written by scripts/keystone-server: Keystone's public application for gunicorn.
import os
import sys

os.environ.setdefault("OS_KEYSTONE_CONFIG_FILES", {conf!r})
# oslo.config parses sys.argv: gunicorn's own arguments must not reach it.
sys.argv = sys.argv[:1]

from keystone.server import wsgi  # noqa: E402

application = wsgi.initialize_public_application()
"""


def write_keystone_config(workdir: Path) -> tuple[Path, Path]:
    """Write ``keystone.conf`` (SQLite, fernet tokens, keys under the workdir) and
    the WSGI module gunicorn loads; (config, module)."""
    keys = workdir / "keys"
    for sub in KEY_REPOSITORIES:
        (keys / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = workdir / "keystone.conf"
    conf.write_text(_KEYSTONE_CONF.format(database=workdir / "keystone.sqlite", keys=keys))
    os.chmod(conf, 0o600)
    wsgi = workdir / "keystone_wsgi.py"
    wsgi.write_text(_WSGI_MODULE.format(conf=str(conf)))
    return conf, wsgi
