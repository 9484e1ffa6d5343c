"""Ingestion: validates and durably records SDK and partner traffic."""
