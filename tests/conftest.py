"""Suite-wide set-up lives in tests/settings.py (it must run before Django starts)."""
