"""`manage.py coatcheck_sessions`: list and revoke a user's sessions.

```
manage.py coatcheck_sessions list 42               # sessions of the user whose pk is 42
manage.py coatcheck_sessions list ada --username   # ... looked up by username
manage.py coatcheck_sessions revoke 42             # log user 42 out everywhere
manage.py coatcheck_sessions revoke 42 --keep ID   # ... except the session with handle ID
manage.py coatcheck_sessions revoke --session ID   # end one session
```

Sessions are shown and named by their handle, which cannot be turned into a cookie.
Needs `"coatcheck.adapters.django"` in `INSTALLED_APPS`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from .....admin import SessionAdmin
from .....cli import protect_ids
from ...config import get_manager

__all__ = ["Command"]


class Command(BaseCommand):
    help = "List or revoke a user's coatcheck sessions."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parse = parser.parse_args

        def parse_args(args: Any = None, namespace: Any = None) -> Any:
            # Public IDs may begin with "-": keep argparse from reading them as options.
            if args is not None:
                args = protect_ids(args, ("--keep", "--session"), positional_after="")
            return parse(args, namespace)

        parser.parse_args = parse_args  # type: ignore[method-assign]
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["list", "revoke"])
        parser.add_argument("user", nargs="?", help="the user's primary key (or username)")
        parser.add_argument(
            "--username", action="store_true", help="USER is a username, not a primary key"
        )
        parser.add_argument("--keep", metavar="ID", help="revoke: keep this session (handle)")
        parser.add_argument("--session", metavar="ID", help="revoke: only this session (handle)")

    def handle(self, *args: Any, **options: Any) -> None:
        admin = SessionAdmin(get_manager())
        if options["session"]:
            if options["action"] != "revoke" or options["user"] or options["keep"]:
                raise CommandError("--session goes alone with 'revoke'")
            try:
                live = admin.revoke(options["session"])
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write("revoked 1 session" if live else "no live session with that ID")
            return
        if not options["user"]:
            raise CommandError("name a user (or use 'revoke --session ID')")
        user = self._user(options["user"], by_username=options["username"])
        if options["action"] == "list":
            self._list(admin, user)
        else:
            try:
                count = admin.revoke_user(user, keep=options["keep"])
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"revoked {count} session{'s' if count != 1 else ''}")

    def _user(self, value: str, *, by_username: bool) -> str:
        if not by_username:
            return value
        model = get_user_model()
        try:
            user = model._default_manager.get_by_natural_key(value)
        except model.DoesNotExist:
            raise CommandError(f"no user with username {value!r}") from None
        return str(user.pk)

    def _list(self, admin: SessionAdmin, user: str) -> None:
        sessions = admin.sessions(user)
        if not sessions:
            self.stdout.write("no sessions")
            return
        self.stdout.write("id\tcreated\tlast seen\tip\tuser agent")
        for info in sessions:
            self.stdout.write(
                "\t".join(
                    [
                        info.id,
                        _time(info.created_at),
                        _time(info.last_seen),
                        info.ip or "-",
                        info.user_agent or "-",
                    ]
                )
            )


def _time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
