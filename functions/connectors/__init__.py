"""One module per vendor behind the protocol in base.py; `registry` maps names to connectors."""
