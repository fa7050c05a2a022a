"""Vendor simulators: real HTTP servers on loopback implementing ../shared/VENDORS.md (see base.py)."""
