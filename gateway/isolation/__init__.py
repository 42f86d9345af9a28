"""Keeping environments apart: the sandbox plan, uids, cgroups, network namespaces, the freezer, credentials."""
