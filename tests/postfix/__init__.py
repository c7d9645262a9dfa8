"""A throwaway Postfix instance on loopback for the interop suite (docs/interop.md)."""

from __future__ import annotations

from .instance import (
    DOMAIN,
    LOCAL_DOMAIN,
    Delivery,
    PostfixInstance,
    PostfixUnavailableError,
    find_postfix,
)

__all__ = [
    "DOMAIN",
    "LOCAL_DOMAIN",
    "Delivery",
    "PostfixInstance",
    "PostfixUnavailableError",
    "find_postfix",
]
