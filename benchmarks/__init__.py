"""Benchmarks of the Lambda against a bare-boto3 floor. Never imported by the function or tests.

Run everything with `python -m benchmarks.run` (see docs/benchmarks.md).
"""
