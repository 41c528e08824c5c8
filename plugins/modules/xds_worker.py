#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: xds_worker
short_description: Register or remove a Deephaven worker in the dhxds control plane
version_added: 0.1.0
description:
  - Makes a worker known to (or forgotten by) the dhxds daemon through its HTTP registration
    API. dhxds then pushes an Envoy cluster for the worker and routes C(/worker/<id>/...) and
    requests carrying the header C(envoy-prefix) to it.
  - Idempotent. The module reads the worker first (C(GET /v1/workers/<id>)); it sends
    C(PUT /v1/workers/<id>) only when the registered worker differs from the task, and
    C(DELETE) only when the worker exists.
  - By default (O(wait=routable)) the task returns only once every Envoy connected to the
    daemon has ACKed the worker's cluster and route, so the worker is reachable through every
    Envoy when the next task runs. This also holds for a worker that was already registered
    (the module then asks the daemon with C(GET /v1/workers/<id>?wait=routable)).
  - When some Envoy has not ACKed within O(wait_timeout), the task B(fails) with a message
    listing those Envoy node ids; the worker stays registered (C(changed) tells whether the task
    changed it) and a rerun waits again. An operator usually wants to stop a rollout there,
    as such an Envoy is disconnected, stuck or rejecting configuration (see C(GET /v1/nodes)).
    Use O(wait=none) to only store the worker.
  - A dhxds daemon without wait support ignores the request to wait and answers at once; the
    module then behaves as with O(wait=none).
  - The task describes the whole worker. Options left out take their documented defaults, so
    leaving out O(tls_sni) on a worker that has one removes it.
  - Runs where the API is reachable; with the API on C(127.0.0.1) delegate to the xds host
    (or use O(token_file) on that host).
author:
  - dhops.envoy maintainers (@dhops)
options:
  api_url:
    description:
      - Base URL of the dhxds registration API, for example C(http://127.0.0.1:8125).
    type: str
    default: http://127.0.0.1:8125
  token:
    description:
      - Bearer token of the API (the content of the daemon's C(api.token_file)).
      - Mutually exclusive with O(token_file).
    type: str
  token_file:
    description:
      - File on the host running the module that holds the token, for example
        C(/etc/dhxds/api-token). Surrounding whitespace is ignored.
      - The daemon's token file may list several tokens, one per line (blank lines and
        C(#) comments ignored) while tokens are rotated; the module sends the last one.
    type: path
  id:
    description:
      - Worker id. 1-128 characters of C([A-Za-z0-9._-]), starting with a letter or digit.
    type: str
    required: true
    aliases: [name]
  host:
    description:
      - Host name or IP address Envoy connects to. Required when O(state=present).
      - Refused (as the daemon refuses them) before any API call are C(0.0.0.0), C(::),
        multicast addresses, C(255.255.255.255), IPv6 link-local addresses and addresses with
        a zone such as C(fe80::1%eth0).
    type: str
  port:
    description:
      - Port Envoy connects to. Required when O(state=present).
    type: int
  envoy_prefix:
    description:
      - Path prefix and C(envoy-prefix) header value that select this worker.
      - Defaults to C(/worker/<id>), the value Deephaven clients send.
      - C(/)-separated segments of C([A-Za-z0-9._~-]), no trailing C(/), at most 256
        characters; checked before any API call.
    type: str
  strip_prefix:
    description:
      - Strip O(envoy_prefix) from the path before forwarding (Deephaven Core workers answer
        404 for prefixed paths).
    type: bool
    default: true
  upstream_protocol:
    description:
      - HTTP protocol towards the worker. V(downstream) follows the client (gRPC over HTTP/2,
        websockets over HTTP/1.1).
    type: str
    choices: [downstream, http1, http2]
    default: downstream
  tls:
    description:
      - Connect to the worker over TLS.
    type: bool
    default: false
  tls_sni:
    description:
      - Server name to send. Only with O(tls=true); the task fails otherwise.
    type: str
  ttl:
    description:
      - Worker lease in seconds (2-86400). The daemon removes the worker by itself unless it
        is registered again within this time, so a worker whose dispatcher died goes away.
      - Every run of a task with O(ttl) renews the lease (a PUT of the worker, also when
        nothing else changed; C(changed) stays false then). Check mode renews nothing.
      - Needs the daemon's etcd registry (C(state.backend=etcd)); the SQLite registry refuses
        it and the task fails with the daemon's message.
      - Left out, the worker stays until it is removed; leaving it out on a worker that has
        one removes the lease.
    type: int
  state:
    description:
      - V(present) registers or updates the worker; V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  validate_certs:
    description:
      - Verify the API's TLS certificate when O(api_url) is C(https).
    type: bool
    default: true
  ca_path:
    description:
      - CA bundle for verifying an C(https) O(api_url).
    type: path
  timeout:
    description:
      - Seconds to wait for each API call (a waiting call gets O(wait_timeout) on top).
      - Must be at least 1.
    type: int
    default: 10
  wait:
    description:
      - V(routable) waits until every Envoy connected to the daemon has ACKed the worker's
        cluster and route (with O(state=present)); the task fails, listing the Envoy nodes that
        have not, when O(wait_timeout) passes first.
      - V(none) returns as soon as the daemon has stored the worker.
      - Removing a worker (O(state=absent)) never waits.
    type: str
    choices: [routable, none]
    default: routable
  wait_timeout:
    description:
      - Seconds to wait for O(wait=routable), from 1 to 60 (the daemon's limit).
    type: int
    default: 30
attributes:
  check_mode:
    support: full
    description: Reads the worker and reports what would change; sends no PUT or DELETE.
  diff_mode:
    support: full
    description: Shows the worker before and after as JSON.
notes:
  - Uses Ansible's own URL code; the target needs no extra Python packages.
  - With no Envoy connected to the daemon there is nothing to wait for; the task returns at
    once.
  - Workers defined in the daemon's configuration file (C(static)) cannot be changed through the
    API; the daemon's error message is shown.
"""

EXAMPLES = r"""
- name: Register worker w1
  dhops.envoy.xds_worker:
    api_url: http://127.0.0.1:8125
    token_file: /etc/dhxds/api-token
    id: w1
    host: 10.0.0.21
    port: 24001

- name: Register a Core+ worker with its own prefix over HTTP/2
  dhops.envoy.xds_worker:
    api_url: http://xds1.example.com:8125
    token: "{{ dhxds_api_token }}"
    id: pq-risk
    host: worker3.example.com
    port: 24010
    envoy_prefix: /worker/pq-risk
    upstream_protocol: http2

- name: Register w2 and only store it (do not wait for Envoy)
  dhops.envoy.xds_worker:
    api_url: http://127.0.0.1:8125
    token_file: /etc/dhxds/api-token
    id: w2
    host: 10.0.0.22
    port: 24002
    wait: none

- name: Register w3, allow Envoy up to a minute, and go on even if some Envoy lags
  dhops.envoy.xds_worker:
    api_url: http://127.0.0.1:8125
    token_file: /etc/dhxds/api-token
    id: w3
    host: 10.0.0.23
    port: 24003
    wait_timeout: 60
  register: w3
  failed_when: w3.failed and not (w3.pending | default([]))

- name: Remove worker w1
  dhops.envoy.xds_worker:
    api_url: http://127.0.0.1:8125
    token_file: /etc/dhxds/api-token
    id: w1
    state: absent
"""

RETURN = r"""
worker:
  description: The worker as the daemon holds it after the task; null when absent. In check
    mode, the worker the task would register.
  returned: always
  type: dict
  sample: {"id": "w1", "host": "10.0.0.21", "port": 24001, "envoy_prefix": "/worker/w1",
           "strip_prefix": true, "upstream_protocol": "downstream", "tls": false}
previous:
  description: The worker as the daemon held it before the task; null when it did not exist.
  returned: always
  type: dict
  sample: null
pending:
  description:
    - Ids of the Envoy nodes that had not ACKed the worker's cluster and route when
      O(wait_timeout) passed; empty when the worker is routable on every connected Envoy.
    - A non-empty list makes the task fail.
  returned: when O(state=present) and O(wait=routable), except in check mode
  type: list
  elements: str
  sample: []
msg:
  description: What happened, in words.
  returned: always
  type: str
  sample: registered worker w1
"""

# Ansible modules keep their imports below the documentation blocks.
import json  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.dhops.envoy.plugins.module_utils.xds_api import (  # noqa: E402
    ApiError,
    XdsApi,
    canonical_host,
    check_envoy_prefix,
    check_host,
    check_ttl,
    check_worker_id,
)

# Fields the task decides; anything else the daemon returns (e.g. "static") is not compared.
COMPARED = (
    "host",
    "port",
    "envoy_prefix",
    "strip_prefix",
    "upstream_protocol",
    "tls",
    "tls_sni",
    "ttl",
)


def desired_worker(params):
    worker = {
        "id": params["id"],
        "host": canonical_host(params["host"]),
        "port": params["port"],
        "envoy_prefix": params["envoy_prefix"] or "/worker/%s" % params["id"],
        "strip_prefix": params["strip_prefix"],
        "upstream_protocol": params["upstream_protocol"],
        "tls": params["tls"],
    }
    if params["tls_sni"]:
        worker["tls_sni"] = params["tls_sni"]
    if params["ttl"] is not None:
        worker["ttl"] = params["ttl"]
    return worker


def check_params(params):
    """Refuse what the daemon would refuse (and option mistakes) before any API call."""
    check_worker_id(params["id"])
    if params["timeout"] < 1:
        raise ApiError("timeout must be at least 1 second, not %d" % params["timeout"])
    if params["wait"] == "routable" and not 1 <= params["wait_timeout"] <= 60:
        raise ApiError("wait_timeout must be from 1 to 60 seconds, not %d" % params["wait_timeout"])
    if params["state"] != "present":
        return
    check_host(params["host"])
    if not 1 <= params["port"] <= 65535:
        raise ApiError("port %d is outside 1-65535" % params["port"])
    if params["envoy_prefix"] is not None:
        check_envoy_prefix(params["envoy_prefix"])
    check_ttl(params["ttl"])
    if params["tls_sni"] is not None:
        if not params["tls"]:
            raise ApiError("tls_sni is set but tls is false: set tls: true to use tls_sni")
        check_host(params["tls_sni"], "tls_sni")


def pending_message(worker_id, pending, wait_timeout, changed):
    return (
        "worker %s is %s but not routable after %ds: %d Envoy node(s) have not ACKed its "
        "cluster and route: %s (see GET /v1/nodes on the daemon; wait: none skips waiting)"
        % (
            worker_id,
            "registered" if changed else "unchanged",
            wait_timeout,
            len(pending),
            ", ".join(pending),
        )
    )


def differs(current, desired):
    return any(current.get(field) != desired.get(field) for field in COMPARED)


def read_token(module):
    if module.params["token"]:
        return module.params["token"]
    path = module.params["token_file"]
    if not path:
        return None
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        module.fail_json(msg="cannot read token_file %s: %s" % (path, exc.strerror or exc))
    # The daemon's api.token_file may list several tokens (rotation); the last one is the
    # newest. Blank lines and '#' comments are ignored, as the daemon does.
    tokens = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not tokens:
        module.fail_json(msg="token_file %s is empty" % path)
    return tokens[-1]


def as_text(worker):
    """Diff text of the fields the task decides, so check mode and real runs show the same."""
    if not worker:
        return ""
    shown = {k: worker[k] for k in ("id", *COMPARED) if k in worker}
    return json.dumps(shown, indent=2, sort_keys=True) + "\n"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            api_url=dict(type="str", default="http://127.0.0.1:8125"),
            token=dict(type="str", no_log=True),
            token_file=dict(type="path"),
            id=dict(type="str", required=True, aliases=["name"]),
            host=dict(type="str"),
            port=dict(type="int"),
            envoy_prefix=dict(type="str"),
            strip_prefix=dict(type="bool", default=True),
            upstream_protocol=dict(
                type="str", choices=["downstream", "http1", "http2"], default="downstream"
            ),
            tls=dict(type="bool", default=False),
            tls_sni=dict(type="str"),
            ttl=dict(type="int"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            timeout=dict(type="int", default=10),
            wait=dict(type="str", choices=["routable", "none"], default="routable"),
            wait_timeout=dict(type="int", default=30),
        ),
        mutually_exclusive=[("token", "token_file")],
        required_if=[("state", "present", ["host", "port"])],
        supports_check_mode=True,
    )
    params = module.params
    worker_id = params["id"]
    try:
        check_params(params)
    except ApiError as exc:
        module.fail_json(msg=str(exc))
    waiting = params["state"] == "present" and params["wait"] == "routable"
    wait_timeout = params["wait_timeout"] if waiting else None
    pending = None

    try:
        api = XdsApi(
            params["api_url"],
            token=read_token(module),
            validate_certs=params["validate_certs"],
            ca_path=params["ca_path"],
            timeout=params["timeout"],
        )
    except ApiError as exc:
        module.fail_json(msg=str(exc))
    try:
        current = api.get_worker(worker_id)
        if params["state"] == "present":
            desired = desired_worker(params)
            changed = current is None or differs(current, desired)
            after = current
            if module.check_mode:
                after = desired if changed else current
            elif changed:
                after, pending = api.put_worker(worker_id, desired, wait_timeout)
            elif params["ttl"] is not None:
                # Unchanged, but a lease is renewed by registering again.
                after, pending = api.put_worker(worker_id, desired, wait_timeout)
            elif waiting:
                pending = api.wait_routable(worker_id, wait_timeout)
            verb = "registered" if current is None else "updated"
            msg = (
                "%s worker %s" % (verb, worker_id) if changed else "worker %s unchanged" % worker_id
            )
        else:
            changed = current is not None
            after = None
            if changed and not module.check_mode:
                api.delete_worker(worker_id)
            msg = (
                "removed worker %s" % worker_id
                if changed
                else "worker %s already absent" % worker_id
            )
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status)

    result = dict(
        changed=changed,
        worker=after,
        previous=current,
        msg=msg,
        diff=dict(
            before_header="dhxds worker %s" % worker_id,
            after_header="dhxds worker %s" % worker_id,
            before=as_text(current),
            after=as_text(after),
        ),
    )
    if pending is not None:
        result["pending"] = pending
    if pending:
        result["msg"] = pending_message(worker_id, pending, wait_timeout, changed)
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
