"""Subscribe by URL: the master PUTs its changes, signed, to subscribers' URLs.

``dj_cqrs.webhooks.verify`` (and ``sign``, ``SignatureError``) need only the standard library:
a receiver imports them without Django. The delivery machinery lives in the submodules
(:mod:`~dj_cqrs.webhooks.subscriptions`, :mod:`~dj_cqrs.webhooks.delivery`,
:mod:`~dj_cqrs.webhooks.deliverer`), imported only where used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dj_cqrs.webhooks.signing import SignatureError, sign, verify

__all__ = ["SignatureError", "sign", "verify"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dj_cqrs.webhooks import signing

        return getattr(signing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
