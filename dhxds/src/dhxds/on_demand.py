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

from google.protobuf import any_pb2

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.router.cluster_specifiers.lua.v3 import lua_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from .dialect import V3
from .model import WEB_API_CLUSTER, WORKER_ID_PATTERN, Worker, cluster_name, default_prefix
from .resources import PREFIX_HEADER, route_action

NODE_METADATA_KEY = "dhxds_on_demand"  # node.metadata flag the envoy role sets
LUA_PLUGIN = "envoy.router.cluster_specifier_plugin.lua"

# Lua patterns of the worker id (model.WORKER_ID_PATTERN; the route's regex bounds its length).
_LUA_SOURCE = """\
function envoy_on_route(route_handle)
  local headers = route_handle:headers()
  local prefix = headers:get("%(header)s")
  local id = prefix and string.match(prefix, "^/worker/([%%w][%%w%%._%%-]*)$")
  if id == nil then
    local path = headers:get(":path")
    id = path and string.match(path, "^/worker/([%%w][%%w%%._%%-]*)")
  end
  if id == nil then
    return "%(fallback)s"
  end
  return "%(cluster)s" .. id
end
""" % {"header": PREFIX_HEADER, "fallback": WEB_API_CLUSTER, "cluster": cluster_name("")}


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
                        safe_regex=_regex(f"/worker/{WORKER_ID_PATTERN}")
                    ),
                )
            ],
        ),
        route=_lua_action(rewrite=False),
    )
    by_path = rc.Route(
        name="on-demand-path",
        match=rc.RouteMatch(safe_regex=_regex(f"/worker/{WORKER_ID_PATTERN}(/.*)?")),
        route=_lua_action(rewrite=True),
    )
    return by_header, by_path
