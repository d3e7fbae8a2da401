"""The embedded AWS: moto plus what it lacks (cache security groups, VPC caches)."""
