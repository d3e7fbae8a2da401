"""cache-ingress: grant ElastiCache ingress to tagged EC2 security groups, by policy."""
