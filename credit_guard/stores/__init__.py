"""Credit stores: the contract and its backends."""

from .base import Balance, CreditStore, Hold, Insufficient, Settlement, StoreUnavailable
from .memory import MemoryStore

__all__ = ["Balance", "CreditStore", "Hold", "Insufficient", "MemoryStore", "Settlement", "StoreUnavailable"]
