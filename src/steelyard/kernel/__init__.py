"""Kernel virtual services: L4 balancing in nftables (render.py sans-IO, nft.py applies)."""
