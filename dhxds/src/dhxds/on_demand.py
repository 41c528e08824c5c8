"""The on-demand route layout (v3, delta ADS, Envoy's on_demand filter with ODCDS): a fixed
route table that names a worker's cluster from the request, so registering a worker never
changes the route configuration and an Envoy only holds the clusters it has been asked for.

    envoy-prefix: /worker/<id>        --> cluster worker_<id>, path as sent (gRPC)
    /worker/<id>, /worker/<id>/...    --> cluster worker_<id>, "/worker/<id>" stripped
    anything else                     --> the fallbacks (no-worker gRPC answer, web_api_service)

A Lua cluster specifier turns the request into the cluster name; when Envoy does not hold that
cluster, the on_demand filter asks dhxds for it on the ADS stream and holds the request until
the answer. A worker whose routes differ from these two shapes (its own envoy_prefix, or
strip_prefix false) is "explicit": its ordered routes go ahead of the fixed ones and its
cluster is sent to every Envoy, as in the other layouts.
"""

from __future__ import annotations

from functools import lru_cache

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.router.cluster_specifiers.lua.v3 import lua_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import any_pb2, duration_pb2

from .dialect import V3
from .encoded import Encoded, digest
from .model import WEB_API_CLUSTER, Worker, cluster_name, default_prefix
from .resources import CONNECT_TIMEOUT_S, PREFIX_HEADER, route_action

NODE_METADATA_KEY = "dhxds_on_demand"  # node.metadata flag the envoy role sets
# Empty clusters one Envoy stream gets for names that never had a worker (protocol rule 8):
# beyond this, such a request waits for Envoy's odcds timeout instead (scanners, junk ids).
MAX_NO_WORKER_CLUSTERS = 1000
LUA_PLUGIN = "envoy.router.cluster_specifier_plugin.lua"

# The worker id as model.WORKER_ID_PATTERN has it, without its length bound (RE2's program size
# limit in Envoy refuses {0,127}); registration bounds the ids that exist.
_ID_REGEX = "[A-Za-z0-9][A-Za-z0-9._-]*"
_LUA_SOURCE = (
    """\
function envoy_on_route(route_handle)
  local headers = route_handle:headers()
  local prefix = headers:get("HEADER")
  local id = prefix and string.match(prefix, "^/worker/([%w][%w%._%-]*)$")
  if id == nil then
    local path = headers:get(":path")
    id = path and string.match(path, "^/worker/([%w][%w%._%-]*)")
  end
  if id == nil then
    return "FALLBACK"
  end
  return "CLUSTER" .. id
end
""".replace("HEADER", PREFIX_HEADER)
    .replace("FALLBACK", WEB_API_CLUSTER)
    .replace("CLUSTER", cluster_name(""))
)


@lru_cache(maxsize=4096)
def no_worker_cluster(name: str) -> Encoded:
    """The answer to a subscribed name without a worker: a cluster with no endpoints, so a
    request fails at once (503, gRPC UNAVAILABLE) instead of waiting, and the worker's real
    cluster replaces it when it registers (Envoy never asks for a name twice)."""
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration_pb2.Duration(seconds=CONNECT_TIMEOUT_S),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(cluster_name=name),
    )
    payload = cluster.SerializeToString(deterministic=True)
    return Encoded(name, V3.cluster_type, payload, digest(payload))


def is_explicit(worker: Worker) -> bool:
    """A worker the fixed routes would not route as it asks: it keeps routes of its own."""
    return worker.envoy_prefix != default_prefix(worker.id) or not worker.strip_prefix


def _regex(pattern: str) -> regex_pb2.RegexMatcher:
    return regex_pb2.RegexMatcher(regex=pattern)


def _lua_action(rewrite: bool) -> rc.RouteAction:
    action = route_action(V3, WEB_API_CLUSTER, None)
    plugin = any_pb2.Any()
    plugin.Pack(
        lua_pb2.LuaConfig(
            source_code=base_pb2.DataSource(inline_string=_LUA_SOURCE),
            default_cluster=WEB_API_CLUSTER,
        )
    )
    action.inline_cluster_specifier_plugin.extension.name = LUA_PLUGIN
    action.inline_cluster_specifier_plugin.extension.typed_config.CopyFrom(plugin)
    if rewrite:
        # "/worker/w1" -> "/", "/worker/w1/x?q" -> "/x?q" (Envoy rewrites the path only).
        action.regex_rewrite.pattern.CopyFrom(_regex(r"^/worker/[^/]+/?"))
        action.regex_rewrite.substitution = "/"
    return action


@lru_cache(maxsize=1)
def on_demand_routes() -> tuple[rc.Route, ...]:
    """The two fixed worker routes, ahead of the fallbacks."""
    by_header = rc.Route(
        name="on-demand-header",
        match=rc.RouteMatch(
            prefix="/",
            headers=[
                rc.HeaderMatcher(
                    name=PREFIX_HEADER,
                    string_match=string_pb2.StringMatcher(
                        safe_regex=_regex(f"/worker/{_ID_REGEX}")
                    ),
                )
            ],
        ),
        route=_lua_action(rewrite=False),
    )
    by_path = rc.Route(
        name="on-demand-path",
        match=rc.RouteMatch(safe_regex=_regex(f"/worker/{_ID_REGEX}(/.*)?")),
        route=_lua_action(rewrite=True),
    )
    return by_header, by_path
