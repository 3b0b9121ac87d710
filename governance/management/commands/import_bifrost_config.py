from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from governance import audit
from governance.config_import import ConfigError, import_config, load_file
from governance.models import Via


class Command(BaseCommand):
    help = "Import the providers and governance sections of a Bifrost config.json (idempotent, all or nothing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="path to config.json")

    def handle(self, *args: Any, path: str, **options: Any) -> None:
        try:
            # The audit trail names this command; the import marks its entries as an import.
            with audit.acting_as(via=Via.COMMAND, user="manage.py import_bifrost_config"):
                result = import_config(load_file(path))
        except ConfigError as exc:
            lines = "\n".join(f"  {where}: {message}" for where, message in exc.problems)
            raise CommandError(f"config not imported, nothing was changed:\n{lines}") from None
        for kind in sorted(set(result.created) | set(result.updated)):
            self.stdout.write(f"{kind}: {result.created.get(kind, 0)} created, {result.updated.get(kind, 0)} updated")
        for name, value in result.generated_values.items():
            # Shown once: only the digest is stored.
            self.stdout.write(f"generated value for virtual key {name!r} (shown once): {value}")
        if result.ignored:
            self.stdout.write(f"ignored (not supported): {', '.join(result.ignored)}")
