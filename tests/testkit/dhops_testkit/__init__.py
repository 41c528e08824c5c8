"""dhops_testkit: the one test harness of dhops.envoy - real dhxds daemons, real Envoy running
the envoy role's own bootstrap, small HTTP/websocket/gRPC backends, ansible runners, and
(dhops_testkit.deephaven) real Deephaven Community Core workers. Used by tests/integration
and bench/. Everything binds to 127.0.0.1 on ephemeral ports and is stopped by its PID.
"""

from .base import CACHE, HOST, ROOT, TOKEN, free_port, run_dhxds, stop_process, tool, wait_for
from .roles import envoy_bootstrap, render_role_template
from .xds import (
    CDS_TYPE,
    ENVOY_MAIN,
    ENVOY_OLD,
    RDS_TYPE,
    AckingAds,
    Backends,
    Daemon,
    Envoy,
    GrpcBackend,
    XdsClient,
    envoy_binary,
    open_ads,
    route_clusters,
    text_backend,
)

__all__ = [
    "CACHE",
    "CDS_TYPE",
    "ENVOY_MAIN",
    "ENVOY_OLD",
    "HOST",
    "RDS_TYPE",
    "ROOT",
    "TOKEN",
    "AckingAds",
    "Backends",
    "Daemon",
    "Envoy",
    "GrpcBackend",
    "XdsClient",
    "envoy_binary",
    "envoy_bootstrap",
    "free_port",
    "open_ads",
    "render_role_template",
    "route_clusters",
    "run_dhxds",
    "stop_process",
    "text_backend",
    "tool",
    "wait_for",
]
