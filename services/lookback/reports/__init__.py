"""Reports: exact counts kept from the outcomes log (docs/outcomes.md)."""
