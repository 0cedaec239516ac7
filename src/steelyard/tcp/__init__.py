"""TCP (L4) userspace load balancer."""
