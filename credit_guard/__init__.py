"""credit_guard: prepaid credits enforced in front of any ASGI app.

    from credit_guard import CreditGuard, PriceTable, MemoryStore

    app = CreditGuard(inner_app, prices=PriceTable.default(),
                      store=MemoryStore({"acct_1": "0.02"}),
                      accounts={"sk-test-1": "acct_1"})

Each priced request's worst case is held before the app runs; a request the
balance cannot cover gets a detailed 402 and never reaches the app; the hold is
settled from the usage the response reports.
"""

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
from .stores import Balance, CreditStore, Hold, Insufficient, MemoryStore, Settlement, StoreUnavailable

__version__ = "0.1.0"

__all__ = [
    "AuthenticationFailed",
    "Balance",
    "CreditGuard",
    "CreditGuardError",
    "CreditStore",
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
    "RequestTooLarge",
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
]
