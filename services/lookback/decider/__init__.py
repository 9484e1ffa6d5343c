"""The decider: applies the attribution rules, exactly once per install."""
