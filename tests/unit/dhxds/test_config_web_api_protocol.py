"""The web_api_service default route speaks HTTP/1.1 upstream unless the config says otherwise:
Deephaven's web_api_service is an HTTP/1.1 endpoint, and browsers reach Envoy over h2."""

import pytest
from dhxds.config import ConfigError, parse_config


def test_default_web_api_service_speaks_http1():
    assert parse_config({}).web_api_service.upstream_protocol == "http1"
    config = parse_config({"web_api_service": {"host": "10.0.0.30", "port": 8123}})
    assert config.web_api_service.upstream_protocol == "http1"


@pytest.mark.parametrize("protocol", ["http1", "http2", "downstream"])
def test_configured_protocol_wins(protocol):
    section = {"host": "10.0.0.30", "port": 8123, "upstream_protocol": protocol}
    assert parse_config({"web_api_service": section}).web_api_service.upstream_protocol == protocol


def test_unknown_protocol_is_refused():
    with pytest.raises(ConfigError, match="upstream_protocol"):
        parse_config({"web_api_service": {"host": "h", "port": 1, "upstream_protocol": "h3"}})
