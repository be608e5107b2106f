"""The admin dashboard: one self-contained page (``PAGE``)."""

PAGE = "<!doctype html><title>credit_guard</title>"
