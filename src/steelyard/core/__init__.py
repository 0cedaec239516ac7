"""Machinery shared by every tier: servers and pools, balancing, health, runtime state."""
