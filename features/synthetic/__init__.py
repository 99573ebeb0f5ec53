"""The synthetic clickstream generator with planted personas."""
