"""The MySQL client/server protocol, sans-IO: packets, handshake, authentication, messages."""
