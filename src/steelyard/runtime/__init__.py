"""Process model: the supervisor (config, store, probes, admin) and the data-plane workers."""
