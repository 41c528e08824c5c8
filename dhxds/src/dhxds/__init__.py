"""dhxds: an xDS control plane (CDS/RDS/ADS, v2 and v3) for Deephaven workers behind Envoy."""

__version__ = "0.1.0"
