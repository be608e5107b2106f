"""credit_guard: prepaid credits enforced in front of any ASGI app."""
