"""File descriptors of the supervisor: as many as the system lets it have, and a share for
the admin API small enough that its clients can never take the ones the health probes, the
workers' channels and the store need (a flood of half-sent admin requests once took them all,
and a healthy server was marked down with "too many open files")."""

from __future__ import annotations

import resource

from steelyard.log import log

ADMIN_SHARE = 4  # the admin API may hold at most 1/4 of the descriptors


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (as nginx's worker_rlimit_nofile, HAProxy
    from its maxconn); the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log("fd_limit", raised_from=soft, to=target)
            soft = target
        except (ValueError, OSError) as exc:
            log("fd_limit", "warn", soft=soft, hard=hard, cause=str(exc))
    return soft


def admin_connection_cap(configured: int, soft_limit: int) -> int:
    """admin.max_connections, lowered to the admin API's share of the descriptors."""
    return max(1, min(configured, soft_limit // ADMIN_SHARE))
