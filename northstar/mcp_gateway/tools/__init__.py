"""Built-in tools and the tool model."""
