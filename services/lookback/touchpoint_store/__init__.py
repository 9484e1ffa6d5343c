"""The touchpoint store: the data service over a pluggable backend."""
