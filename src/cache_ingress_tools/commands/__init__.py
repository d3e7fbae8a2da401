"""Subcommands of `cache-ingress`, one module each (see cache_ingress_tools.cli)."""
