"""What every service shares: config, server bootstrap, clients, errors."""
