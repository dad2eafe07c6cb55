"""Built-in format adapters. Registration happens through entry points, never on import."""
