"""Model formats shipped with the core (registered through entry points like any plugin)."""
