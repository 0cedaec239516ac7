"""Redis sharding proxy (Codis class) on unmodified Redis 7."""
