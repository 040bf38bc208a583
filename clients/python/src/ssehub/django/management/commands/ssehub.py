"""``manage.py ssehub``: runs the hub with the settings Django publishes with.

From ``SSEHUB``: ``--listen`` (``LISTEN``, else the host and port of
``URL``), ``--public-topic`` for each of ``PUBLIC_TOPICS``, ``--cors-origin``
for each of ``CORS_ORIGINS``, ``--redis`` from ``REDIS``, then ``ARGS``, then
whatever follows on the command line (``manage.py ssehub --workers 2``). The
secrets go through the environment (``SSEHUB_PUBLISH_TOKEN``,
``SSEHUB_JWT_SECRET``), never the command line, where ``ps`` would show them.
``JWT_PRIVATE_KEY`` is the app's signing key; the hub needs the public key:
pass ``--jwt-public-key FILE`` in ``ARGS``.

The binary: ``BINARY``, else the one ``pip install ssehub[server]`` put in
this environment's scripts directory, else ``ssehub`` on ``PATH``. The
command replaces itself with it (``exec``), so signals reach the hub directly.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, handle_default_options

from ...conf import HubSettings, hub_settings


def find_binary(conf: HubSettings) -> str:
    """The ``ssehub`` executable to run."""
    if conf.binary:
        return conf.binary
    scripts = Path(sysconfig.get_path("scripts")) / "ssehub"
    if scripts.is_file() and os.access(scripts, os.X_OK):
        return str(scripts)
    found = shutil.which("ssehub")
    if found is None:
        raise CommandError('no ssehub binary: pip install "ssehub[server]", or set SSEHUB["BINARY"]')
    return found


def command_line(conf: HubSettings, extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """The argv and the environment additions for the hub."""
    argv = [find_binary(conf), "--listen", conf.listen]
    for topic in conf.public_topics:
        argv += ["--public-topic", topic]
    for origin in conf.cors_origins:
        argv += ["--cors-origin", origin]
    if conf.redis:
        argv += ["--redis", conf.redis]
    if conf.jwt_audience:
        argv += ["--jwt-audience", conf.jwt_audience]
    if conf.jwt_issuer:
        argv += ["--jwt-issuer", conf.jwt_issuer]
    argv += [*conf.args, *extra]
    env: dict[str, str] = {}
    if conf.publish_token:
        env["SSEHUB_PUBLISH_TOKEN"] = conf.publish_token
    if conf.jwt_secret:
        env["SSEHUB_JWT_SECRET"] = conf.jwt_secret
    return argv, env


class Command(BaseCommand):
    help = "Runs the ssehub hub with settings from SSEHUB (extra arguments are passed to it)."
    requires_system_checks: list[str] = []

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # No abbreviations: `--p` must reach the hub, not become --pythonpath.
        return super().create_parser(prog_name, subcommand, allow_abbrev=False, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--print-command", action="store_true", help="print the command line instead of running it"
        )

    def run_from_argv(self, argv: list[str]) -> None:
        """BaseCommand's, except that arguments it does not know are the hub's."""
        self._called_from_command_line = True
        parser = self.create_parser(argv[0], argv[1])
        options, hub_args = parser.parse_known_args(argv[2:])
        handle_default_options(options)
        try:
            self.execute(**vars(options), hub_args=hub_args)
        except CommandError as e:
            self.stderr.write(f"{e.__class__.__name__}: {e}")
            sys.exit(e.returncode)

    def handle(self, *args: Any, **options: Any) -> None:
        argv, env = command_line(hub_settings(), list(options.get("hub_args", [])))
        if options["print_command"]:
            names = " ".join(f"{name}=..." for name in sorted(env))
            self.stdout.write((names + " " if names else "") + shlex.join(argv))
            return
        self.stderr.write(f"ssehub: running {argv[0]}")
        os.execve(argv[0], argv, {**os.environ, **env})
