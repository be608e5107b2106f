"""Reference data from outside the project, found where it is.

LiteLLM's public price map: ``$LITELLM_PRICE_MAP`` when set, else the pinned
copy beside the repository (``../shared/prices/litellm_model_prices.json``),
else the copy the ``litellm`` package ships (the README's test command installs
it).  Tests that need it are skipped with a reason when none is found, and fail
in CI.  Tests of the bundled table, which was made from one pinned copy of the
map, need that copy (``PINNED_LITELLM_PRICE_MAP``): the one beside the
repository or ``$LITELLM_PRICE_MAP``, never the package's, which may be newer.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

__all__ = ["LITELLM_PRICE_MAP", "PINNED_LITELLM_PRICE_MAP", "needs_litellm_map", "needs_pinned_litellm_map"]

_PINNED = Path(__file__).resolve().parents[2] / "shared" / "prices" / "litellm_model_prices.json"


def _litellm_price_map() -> Path | None:
    if os.environ.get("LITELLM_PRICE_MAP"):
        return Path(os.environ["LITELLM_PRICE_MAP"])
    if _PINNED.exists():
        return _PINNED
    spec = importlib.util.find_spec("litellm")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "model_prices_and_context_window_backup.json"
        if bundled.exists():
            return bundled
    return None


LITELLM_PRICE_MAP = _litellm_price_map() or Path("litellm-price-map-not-found.json")
needs_litellm_map = pytest.mark.skipif(
    not LITELLM_PRICE_MAP.exists() and not os.environ.get("CI"),
    reason="LiteLLM's price map: no $LITELLM_PRICE_MAP, ../shared/prices or litellm (pip install -e '.[litellm]')",
)

PINNED_LITELLM_PRICE_MAP = Path(os.environ.get("LITELLM_PRICE_MAP") or _PINNED)
# Skipped even in CI: the pinned copy is data beside the repository, not in it.
needs_pinned_litellm_map = pytest.mark.skipif(
    not PINNED_LITELLM_PRICE_MAP.exists(),
    reason="the pinned copy of LiteLLM's price map the bundled table was made from (../shared/prices or "
    "$LITELLM_PRICE_MAP) is not found",
)
