"""Access control of the service: API keys with roles, the workspace's secret files and the
hash-chained audit log of admin actions (issue #13)."""
