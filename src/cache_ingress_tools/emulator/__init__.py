"""The embedded AWS: moto plus what it lacks (cache security groups, VPC caches, atomic
conditional writes, security-group paging)."""
