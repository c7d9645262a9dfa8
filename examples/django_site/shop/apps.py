"""Connect the shop's mail signal receivers when Django starts."""

from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"

    def ready(self) -> None:
        from . import receivers  # noqa: F401, PLC0415 - connects the receivers
