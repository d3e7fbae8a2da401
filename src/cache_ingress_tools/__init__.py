"""Operator and developer tooling for cache-ingress (never imported by the Lambda)."""
