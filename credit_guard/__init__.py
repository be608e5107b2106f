"""credit_guard: prepaid credits enforced in front of any ASGI app.

    from credit_guard import CreditGuard, PriceTable, MemoryStore  # or SQLiteStore, RedisStore, open_store

    app = CreditGuard(inner_app, prices=PriceTable.default(),
                      store=MemoryStore({"acct_1": "0.02"}),
                      accounts={"sk-test-1": "acct_1"})

Each priced request's worst case is held before the app runs; a request the
balance cannot cover gets a detailed 402 and never reaches the app; the hold is
settled from the usage the response reports.
"""

from typing import TYPE_CHECKING, Any

from .api import CreditsAPI
from .errors import (
    AuthenticationFailed,
    CreditGuardError,
    InsufficientCredits,
    InvalidRequest,
    ModelNotPricedError,
    PricingUnavailable,
    RequestTooLarge,
    StoreUnavailableError,
    UnsupportedMediaType,
    credit_error_handler,
    install_handler,
)
from .middleware import DEFAULT_ROUTES, CreditGuard
from .prices import ModelNotPriced, ModelPrice, PriceTable
from .quote import Quote, Suggestions, affordable_max_tokens, insufficient_credits, make_quote
from .stores import (
    Balance,
    CreditStore,
    Hold,
    Insufficient,
    MemoryStore,
    Settlement,
    SQLiteStore,
    StoreUnavailable,
    open_store,
)

if TYPE_CHECKING:
    from .stores.redis import RedisStore

__version__ = "0.1.0"

__all__ = [
    "AuthenticationFailed",
    "Balance",
    "CreditGuard",
    "CreditGuardError",
    "CreditStore",
    "CreditsAPI",
    "DEFAULT_ROUTES",
    "Hold",
    "Insufficient",
    "InsufficientCredits",
    "InvalidRequest",
    "MemoryStore",
    "ModelNotPriced",
    "ModelNotPricedError",
    "ModelPrice",
    "PriceTable",
    "Quote",
    "RedisStore",
    "RequestTooLarge",
    "SQLiteStore",
    "Settlement",
    "StoreUnavailable",
    "PricingUnavailable",
    "StoreUnavailableError",
    "Suggestions",
    "UnsupportedMediaType",
    "affordable_max_tokens",
    "credit_error_handler",
    "insufficient_credits",
    "install_handler",
    "make_quote",
    "open_store",
]


def __getattr__(name: str) -> Any:
    # redis-py is an optional extra: RedisStore is imported only when asked for.
    if name == "RedisStore":
        from .stores.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module 'credit_guard' has no attribute {name!r}")
