from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from governance.pricing import seed_model_prices


class Command(BaseCommand):
    help = "Load the shipped model prices (missing rows only, unless --update)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--update", action="store_true", help="overwrite existing prices with the shipped ones")

    def handle(self, *args: Any, update: bool = False, **options: Any) -> None:
        created, updated = seed_model_prices(update=update)
        self.stdout.write(f"model prices: {created} created, {updated} updated")
