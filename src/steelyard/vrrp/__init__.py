"""Virtual-IP failover: VRRPv3 (RFC 9568), interoperable with keepalived."""
