"""The SRN adapter: asks self-reporting networks about a device at install time."""
