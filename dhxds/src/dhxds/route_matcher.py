"""The v3 route layout: the virtual host's generic matcher (Envoy >= 1.22) instead of an ordered
route list, so Envoy finds a worker's route with a hash lookup and a prefix trie, however many
workers there are. Envoy 1.12-1.17 (v2) keeps the ordered list of resources.py.

    envoy-prefix header --exact_match_map--> the worker's header route (gRPC)
      no match: :path --prefix_match_map "/worker/<id>"--> RouteList [bare path, path prefix,
                                                                      *fallbacks]
        no match: RouteList [*fallbacks] (the no-worker gRPC answer, then web_api_service)

The routes in the actions are the ordered list's own routes (rewrite, websocket upgrade,
timeouts): Envoy still checks each route's match, in list order. Each trie entry's list ends
with the fallbacks because the trie picks the longest key that prefixes the path, so
/worker/w1x/... lands on w1's entry when w1x is not registered: w1's routes do not match it,
and the fallbacks answer as the ordered list would.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import http_inputs_pb2
from google.protobuf import any_pb2
from xds.core.v3 import extension_pb2
from xds.type.matcher.v3 import matcher_pb2

from .dialect import V3
from .model import Worker
from .resources import PREFIX_HEADER, fallback_routes, worker_routes
from .wire import Chunks, field

Matcher = matcher_pb2.Matcher
MatchMap = Matcher.MatcherTree.MatchMap

# Field numbers: VirtualHost.matcher; Matcher.matcher_tree / on_no_match; MatcherTree.input /
# exact_match_map / prefix_match_map; OnMatch.matcher.
_VHOST_MATCHER = 21
_MATCHER_TREE, _ON_NO_MATCH = 2, 3
_TREE_INPUT, _TREE_EXACT, _TREE_PREFIX = 1, 2, 3
_ON_MATCH_MATCHER = 1


def _packed(message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def _header_input(header: str) -> extension_pb2.TypedExtensionConfig:
    return extension_pb2.TypedExtensionConfig(
        name=header,
        typed_config=_packed(http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=header)),
    )


def _action(name: str, message) -> Matcher.OnMatch:
    return Matcher.OnMatch(
        action=extension_pb2.TypedExtensionConfig(name=name, typed_config=_packed(message))
    )


def worker_path_key(worker: Worker) -> str:
    return f"/worker/{worker.id}"


def worker_entries(worker: Worker) -> tuple[MatchMap, MatchMap]:
    """This worker's entry in the header map and its entry in the path trie."""
    header, bare, prefix = worker_routes(worker, V3).routes
    del header.match.headers[:]  # the map has matched the header already
    by_header = MatchMap()
    by_header.map[worker.envoy_prefix].CopyFrom(_action(header.name, header))
    by_path = MatchMap()
    routes = rc.RouteList(routes=[bare, prefix, *fallback_routes(V3)])
    by_path.map[worker_path_key(worker)].CopyFrom(_action(f"{worker.id}-paths", routes))
    return by_header, by_path


def encoded_worker_entries(worker: Worker) -> tuple[bytes, bytes]:
    """worker_entries serialized: a MatchMap of one entry is that entry's repeated map field,
    so the maps of all workers are the concatenation of these."""
    by_header, by_path = worker_entries(worker)
    return (
        by_header.SerializeToString(deterministic=True),
        by_path.SerializeToString(deterministic=True),
    )


@lru_cache(maxsize=1)
def _fixed_parts() -> tuple[bytes, bytes, bytes]:
    """The parts that never change: both inputs and the last on_no_match."""
    return (
        _header_input(PREFIX_HEADER).SerializeToString(deterministic=True),
        _header_input(":path").SerializeToString(deterministic=True),
        _action("fallbacks", rc.RouteList(routes=fallback_routes(V3))).SerializeToString(
            deterministic=True
        ),
    )


def encoded_matcher(
    header_entries: list[bytes], path_entries: list[bytes], sizes: tuple[int, int] | None = None
) -> Chunks:
    """The VirtualHost.matcher field, assembled from encoded worker entries (at least one);
    `sizes` are the entries' total lengths when the caller keeps them."""
    header_size, path_size = sizes or (None, None)
    header_input, path_input, fallbacks = _fixed_parts()
    path_tree = Chunks(field(_TREE_INPUT, path_input)).add_field(
        _TREE_PREFIX, Chunks().extend(path_entries, path_size)
    )
    path_matcher = Chunks().add_field(_MATCHER_TREE, path_tree)
    path_matcher.parts.append(field(_ON_NO_MATCH, fallbacks))
    path_matcher.size += len(path_matcher.parts[-1])
    header_tree = Chunks(field(_TREE_INPUT, header_input)).add_field(
        _TREE_EXACT, Chunks().extend(header_entries, header_size)
    )
    on_no_match = Chunks().add_field(_ON_MATCH_MATCHER, path_matcher)
    matcher = Chunks().add_field(_MATCHER_TREE, header_tree).add_field(_ON_NO_MATCH, on_no_match)
    return Chunks().add_field(_VHOST_MATCHER, matcher)


def matcher(workers: Iterable[Worker]) -> Matcher:
    """The readable build of what encoded_matcher assembles (tests compare the two)."""
    header_map, path_map = MatchMap(), MatchMap()
    for worker in workers:
        by_header, by_path = worker_entries(worker)
        header_map.MergeFrom(by_header)
        path_map.MergeFrom(by_path)
    path_matcher = Matcher(
        matcher_tree=Matcher.MatcherTree(input=_header_input(":path"), prefix_match_map=path_map),
        on_no_match=_action("fallbacks", rc.RouteList(routes=fallback_routes(V3))),
    )
    return Matcher(
        matcher_tree=Matcher.MatcherTree(
            input=_header_input(PREFIX_HEADER), exact_match_map=header_map
        ),
        on_no_match=Matcher.OnMatch(matcher=path_matcher),
    )
