"""Benchmarks of the Lambda against a bare-boto3 floor. Never imported by the function; tests
use the in-process AWS answers (answers.py) and the verdict rule (run.py).

Run everything with `python -m benchmarks.run` (see docs/benchmarks.md).
"""
