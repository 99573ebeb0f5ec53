"""Data in: event schema, sources, transforms, privacy helpers and the Feast adapter."""
