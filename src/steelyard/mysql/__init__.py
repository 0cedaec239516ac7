"""The MySQL tier: a proxy speaking the MySQL/MariaDB client-server protocol."""
