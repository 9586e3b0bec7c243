"""A simulated OpenStack cloud, used ONLY for the flat-in-N benchmark figure.

The 2-core test bed boots servers one after another, so it cannot show whether `sparkstack
up` takes as long for 1+300 nodes as for 1+1 on a cloud with many hypervisors. Here every
server goes BUILD -> ACTIVE exactly `boot_s` seconds after its POST however many exist, and
is gone `delete_s` seconds after its DELETE: what remains is the client's own cost and waits.

    with SimCloud(boot_s=5.0) as sim:
        sim.write_clouds_yaml(tmp / "clouds.yaml", name="sim")
        ...  # OS_CLIENT_CONFIG_FILE=tmp/clouds.yaml sparkstack up -i INV (cluster.cloud "sim")
        print(sim.summary())

It answers on 127.0.0.1 what openstacksdk 4.x sends for `sparkstack up --until servers` and
`sparkstack down`: version documents; Keystone v3 password auth (one user and project, any
password) with a catalog pointing back here; Nova limits, flavors, keypairs, server groups
and members, servers (one per POST, or Nova's multi-create named `<name>-1` ... `<name>-N` as
nova/compute/api.py names them; list and detail filtered by name, status, tags and
changes-since; get; delete), echoing the microversion asked for; Neutron networks, ports,
security groups and rules, floating IPs (also on a port no server uses yet), tags, quota
details; Glance images. Quotas hold on create. Requests are counted by (service, method,
path with ids as {id}); an unknown path is answered 404 and kept in `unknown`, a filter not
applied in `ignored`, a request the sim itself failed on (500) in `errors`.

Not simulated: API latency and load (it answers at once, under one lock), scheduling and
capacity, servers in ERROR, console logs and all after `--until servers`, updates (PUT other
than tags), pagination, token validity, policy, older microversions' shapes, routers,
subnets, IPv6, other services.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.testbed.faultproxy import normalise_path

log = logging.getLogger(__name__)

DOMAIN = {"id": "default", "name": "Default"}
PROJECT = {"id": "5e1f0c0a9b7d4c56a1d2e3f405162738", "name": "sim", "domain": DOMAIN}
USER = {"id": "0d3a1c2b4e5f46708192a3b4c5d6e7f8", "name": "sim", "domain": DOMAIN,
        "password_expires_at": None}
NOVA_MIN, NOVA_MAX = (2, 1), (2, 100)
USER_DATA_MAX = 65535  # Nova's limit on the base64 user_data
FLAVORS = {"m1.tiny": (1, 512, 1), "m1.small": (1, 2048, 20),  # (vcpus, MiB, GiB), the bed's
           "m1.medium": (2, 4096, 40), "m1.large": (4, 8192, 80)}
QUOTAS = {"instances": 1000, "cores": 10000, "ram": 20_000_000, "server_groups": 10,
          "server_group_members": 1000, "port": 2000, "floatingip": 50,
          "security_group": 100, "security_group_rule": 1000, "network": 100}
# Neutron: path segment -> (collection key, member key, quota key)
NEUTRON = {"networks": ("networks", "network", "network"),
           "ports": ("ports", "port", "port"),
           "security-groups": ("security_groups", "security_group", "security_group"),
           "security-group-rules": ("security_group_rules", "security_group_rule",
                                    "security_group_rule"),
           "floatingips": ("floatingips", "floatingip", "floatingip")}
# Query parameters about paging, fields or scope, not about which resources match.
NOT_FILTERS = {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse",
               "all_projects", "all_tenants", "deleted", "project_id", "tenant_id"}
RULE_KEYS = ("security_group_id", "direction", "ethertype", "protocol", "port_range_min",
             "port_range_max", "remote_ip_prefix", "remote_group_id")


class Fail(Exception):
    """An error answer: the status and the service's JSON error body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, body)
        self.status, self.body = status, body


def nova_error(status: int, message: str) -> Fail:
    key = {400: "badRequest", 403: "forbidden", 404: "itemNotFound",
           409: "conflictingRequest"}.get(status, "computeFault")
    return Fail(status, {key: {"code": status, "message": message}})


def neutron_error(status: int, kind: str, message: str) -> Fail:
    return Fail(status, {"NeutronError": {"type": kind, "message": message, "detail": ""}})


def iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def as_query(value: Any) -> str:
    """A resource's value as Neutron compares it with a query string."""
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


@dataclass
class Request:
    query: dict[str, list[str]]
    body: dict[str, Any]


@dataclass
class Server:
    id: str
    name: str
    flavor: str
    fields: dict[str, Any]  # as the POST gave them: key_name, tags, metadata
    posted: float  # time.monotonic() of the POST
    created: float  # time.time() of the POST
    group: str = ""
    ports: list[str] = field(default_factory=list)
    own_ports: list[str] = field(default_factory=list)  # Nova made them; they go with it
    deleted: float | None = None  # time.monotonic() of the DELETE
    deleted_wall: float = 0.0


class SimCloud:
    """One simulated project on 127.0.0.1:<ephemeral port>; use it as a context manager."""

    def __init__(self, *, boot_s: float = 5.0, delete_s: float = 0.5, host: str = "127.0.0.1",
                 image: str = "debian-12", network: str = "private",
                 external: str = "public") -> None:
        self.boot_s, self.delete_s, self.host = boot_s, delete_s, host
        self.unknown: list[str] = []  # "METHOD /path?query" answered 404 as unknown
        self.ignored: set[str] = set()  # "collection?parameter" filters not applied
        self.errors: list[str] = []  # requests the sim itself failed on (answered 500)
        self.peak_servers = 0
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._addresses = itertools.count(10)
        self._floating = itertools.count(10)
        self._servers: dict[str, Server] = {}
        self._gone: list[dict[str, Any]] = []  # views of deleted servers, for changes-since
        self._keypairs: dict[str, dict[str, Any]] = {}
        self._groups: dict[str, dict[str, Any]] = {}
        self._net: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in NEUTRON}
        now = iso(time.time())
        self._image = {"id": str(uuid.uuid4()), "name": image, "status": "active",
                       "visibility": "public", "min_disk": 0, "min_ram": 0, "size": 400 << 20,
                       "disk_format": "qcow2", "container_format": "bare", "tags": [],
                       "owner": PROJECT["id"], "protected": False, "os_hidden": False,
                       "created_at": now, "updated_at": now, "schema": "/v2/schemas/image"}
        for name, external_net in ((network, False), (external, True)):
            net = self._common(name) | {"status": "ACTIVE", "subnets": [str(uuid.uuid4())],
                                        "router:external": external_net, "shared": False,
                                        "mtu": 1450, "admin_state_up": True}
            self._net["networks"][net["id"]] = net
        self._default_sg = self._new_security_group("default", "Default security group")["id"]
        self._routes = self._route_table()

    # ----------------------------------------------------------------- life and results

    def __enter__(self) -> SimCloud:
        self._httpd = ThreadingHTTPServer((self.host, 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.sim = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="simcloud")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            assert self._thread is not None
            self._thread.join()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "use SimCloud as a context manager"
        return f"http://{self.host}:{self._httpd.server_address[1]}"

    def write_clouds_yaml(self, path: str | Path, *, name: str = "sim") -> str:
        """A clouds.yaml (written as JSON, which is YAML) with one cloud `name`; returns it."""
        auth = {"auth_url": f"{self.url}/identity/v3", "username": USER["name"],
                "password": "any", "project_name": PROJECT["name"],
                "user_domain_name": "Default", "project_domain_name": "Default"}
        cloud = {"auth": auth, "region_name": "RegionOne", "identity_api_version": 3}
        Path(path).write_text(json.dumps({"clouds": {name: cloud}}, indent=2) + "\n")
        return name

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Requests by (service, method, path with ids as {id})."""
        with self._lock:
            return dict(self._counts)

    def total(self, *, service: str | None = None, method: str | None = None) -> int:
        return sum(n for (s, m, _), n in self.counts().items()
                   if service in (None, s) and method in (None, m))

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    def summary(self) -> str:
        rows = sorted(self.counts().items())
        lines = [f"{n:6d}  {s:8s} {m:6s} {p}" for (s, m, p), n in rows]
        return "\n".join([*lines, f"{sum(n for _, n in rows):6d}  total"])

    def server_count(self) -> int:
        """Servers that exist now (a deleted one until its delete has finished)."""
        with self._lock:
            self._reap(time.monotonic())
            return len(self._servers)

    # ----------------------------------------------------------------- dispatch

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Callable[..., Any]]]:
        c, n, kinds = r"/compute/v2\.1", r"/network/v2\.0", "|".join(NEUTRON)
        table = [
            ("GET", r"/identity", lambda r: (300, {"versions": {"values": [self._keystone()]}})),
            ("GET", r"/identity/v3", lambda r: (200, {"version": self._keystone()})),
            ("POST", r"/identity/v3/auth/tokens", self._token),
            ("GET", r"/compute", lambda r: (200, {"versions": [self._nova()]})),
            ("GET", r"/compute/v2\.1", lambda r: (200, {"version": self._nova()})),
            ("GET", c + r"/limits", self._limits),
            ("GET", c + r"/flavors(/detail)?", self._flavors),
            ("GET", c + r"/os-keypairs", self._keypair_list),
            ("GET", c + r"/os-keypairs/([^/]+)", self._keypair_get),
            ("POST", c + r"/os-keypairs", self._keypair_create),
            ("DELETE", c + r"/os-keypairs/([^/]+)", self._keypair_delete),
            ("GET", c + r"/os-server-groups", self._group_list),
            ("POST", c + r"/os-server-groups", self._group_create),
            ("DELETE", c + r"/os-server-groups/([^/]+)", self._group_delete),
            ("GET", c + r"/servers(/detail)?", self._server_list),
            ("GET", c + r"/servers/([^/]+)", self._server_get),
            ("POST", c + r"/servers", self._server_create),
            ("DELETE", c + r"/servers/([^/]+)", self._server_delete),
            ("GET", r"/network", lambda r: (200, {"versions": [self._version("network")]})),
            ("GET", n + r"/quotas/([^/]+)/details(?:\.json)?", self._network_quota),
            ("GET", n + rf"/({kinds})", self._n_list),
            ("POST", n + rf"/({kinds})", self._n_create),
            ("GET", n + rf"/({kinds})/([^/]+)", self._n_get),
            ("DELETE", n + rf"/({kinds})/([^/]+)", self._n_delete),
            ("PUT", n + rf"/({kinds})/([^/]+)/tags", self._n_tags),
            ("GET", r"/image", lambda r: (300, {"versions": [self._version("image")]})),
            ("GET", r"/image/v2/images", self._image_list),
            ("GET", r"/image/v2/images/([^/]+)", self._image_get),
        ]
        return [(m, re.compile(p), fn) for m, p, fn in table]

    def dispatch(self, method: str, target: str, raw: bytes, headers: Any) -> tuple[int, Any, dict]:
        """One request: (status, JSON body or None, headers)."""
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        service, _, rest = path.lstrip("/").partition("/")
        req = Request(parse_qs(parts.query, keep_blank_values=True),
                      json.loads(raw) if raw.strip() else {})
        extra: dict[str, str] = {}
        with self._lock:
            self._counts[(service, method, normalise_path("/" + rest))] += 1
            self._reap(time.monotonic())
            try:
                if service == "compute":
                    extra = self._microversion(headers)
                for m, pattern, fn in self._routes:
                    if m == method and (match := pattern.fullmatch(path)):
                        status, body, *more = fn(*match.groups(), req)
                        return status, body, {**extra, **(more[0] if more else {})}
            except Fail as exc:
                return exc.status, exc.body, extra
            except Exception as exc:  # a bug here, not the client's: 500, and kept
                log.exception("simcloud: %s %s failed", method, target)
                self.errors.append(f"{method} {target}: {exc!r}")
                return 500, {"computeFault": {"code": 500, "message": repr(exc)}}, {}
            self.unknown.append(f"{method} {target}")
        log.warning("simcloud: unknown %s %s", method, target)
        return 404, {"error": {"message": f"simcloud does not know {method} {path}"}}, {}

    @staticmethod
    def _microversion(headers: Any) -> dict[str, str]:
        text = headers.get("OpenStack-API-Version", "").removeprefix("compute").strip()
        text = text or headers.get("X-OpenStack-Nova-API-Version", "").strip() or "2.1"
        major, minor = NOVA_MAX if text == "latest" else map(int, text.split("."))
        if not NOVA_MIN <= (major, minor) <= NOVA_MAX:
            raise Fail(406, {"computeFault": {"code": 406, "message": f"Version {text} is "
                                              "not supported by the API."}})
        return {"OpenStack-API-Version": f"compute {major}.{minor}",
                "X-OpenStack-Nova-API-Version": f"{major}.{minor}",
                "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version"}

    # ----------------------------------------------------------------- identity, versions

    def _keystone(self) -> dict[str, Any]:
        return {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                "links": [{"rel": "self", "href": f"{self.url}/identity/v3/"}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.identity-v3+json"}]}

    def _nova(self) -> dict[str, Any]:
        return {"id": "v2.1", "status": "CURRENT", "version": "{}.{}".format(*NOVA_MAX),
                "min_version": "{}.{}".format(*NOVA_MIN), "updated": "2013-07-23T11:33:21Z",
                "links": [{"rel": "self", "href": f"{self.url}/compute/v2.1/"}]}

    def _version(self, service: str) -> dict[str, Any]:
        version, path = {"network": ("v2.0", "v2.0"), "image": ("v2.17", "v2")}[service]
        return {"id": version, "status": "CURRENT",
                "links": [{"rel": "self", "href": f"{self.url}/{service}/{path}/"}]}

    def _token(self, req: Request) -> tuple[int, Any, dict[str, str]]:
        def endpoints(kind: str, path: str) -> list[dict[str, str]]:
            return [{"id": uuid.uuid5(uuid.NAMESPACE_URL, kind + i).hex, "interface": i,
                     "region": "RegionOne", "region_id": "RegionOne",
                     "url": f"{self.url}/{path}"} for i in ("public", "internal")]

        services = (("identity", "keystone", "identity"), ("compute", "nova", "compute/v2.1"),
                    ("network", "neutron", "network"), ("image", "glance", "image"))
        catalog = [{"type": kind, "name": name, "id": uuid.uuid5(uuid.NAMESPACE_URL, kind).hex,
                    "endpoints": endpoints(kind, path)} for kind, name, path in services]
        now = time.time()
        token = {"methods": ["password"], "user": USER, "project": PROJECT,
                 "audit_ids": [uuid.uuid4().hex[:22]], "is_domain": False,
                 "issued_at": iso(now).replace("Z", ".000000Z"),
                 "expires_at": iso(now + 86400).replace("Z", ".000000Z"),
                 "roles": [{"id": uuid.uuid5(uuid.NAMESPACE_URL, "member").hex,
                            "name": "member"}], "catalog": catalog}
        return 201, {"token": token}, {"X-Subject-Token": "sim" + uuid.uuid4().hex}

    # ----------------------------------------------------------------- nova

    def _used(self) -> dict[str, int]:
        live = list(self._servers.values())
        return {"instances": len(live), "cores": sum(FLAVORS[s.flavor][0] for s in live),
                "ram": sum(FLAVORS[s.flavor][1] for s in live)}

    def _limits(self, req: Request) -> tuple[int, Any]:
        used = self._used()
        absolute = {"maxTotalInstances": QUOTAS["instances"],
                    "totalInstancesUsed": used["instances"],
                    "maxTotalCores": QUOTAS["cores"], "totalCoresUsed": used["cores"],
                    "maxTotalRAMSize": QUOTAS["ram"], "totalRAMUsed": used["ram"],
                    "maxServerGroups": QUOTAS["server_groups"],
                    "totalServerGroupsUsed": len(self._groups),
                    "maxServerGroupMembers": QUOTAS["server_group_members"],
                    "maxTotalKeypairs": 100, "maxServerMeta": 128, "maxImageMeta": 128}
        return 200, {"limits": {"rate": [], "absolute": absolute}}

    def _flavors(self, detail: str | None, req: Request) -> tuple[int, Any]:
        flavors = []
        for fid, (vcpus, ram, disk) in FLAVORS.items():
            flavor = {"id": fid, "name": fid, "description": None, "links": [
                {"rel": "self", "href": f"{self.url}/compute/v2.1/flavors/{fid}"}]}
            if detail:
                flavor |= {"vcpus": vcpus, "ram": ram, "disk": disk, "swap": 0,
                           "OS-FLV-EXT-DATA:ephemeral": 0, "OS-FLV-DISABLED:disabled": False,
                           "os-flavor-access:is_public": True, "rxtx_factor": 1.0,
                           "extra_specs": {}}
            flavors.append(flavor)
        return 200, {"flavors": flavors}

    def _keypair(self, name: str) -> dict[str, Any]:
        if name not in self._keypairs:
            raise nova_error(404, f"Keypair {name} not found for user {USER['id']}")
        return self._keypairs[name]

    def _keypair_list(self, req: Request) -> tuple[int, Any]:
        return 200, {"keypairs": [{"keypair": k} for k in self._keypairs.values()]}

    def _keypair_get(self, name: str, req: Request) -> tuple[int, Any]:
        return 200, {"keypair": self._keypair(name)}

    def _keypair_create(self, req: Request) -> tuple[int, Any]:
        kp = req.body.get("keypair") or {}
        name, public = kp.get("name", ""), kp.get("public_key", "")
        if not name or not public:  # Nova generates none since 2.92
            raise nova_error(400, "Invalid input: a keypair needs a name and a public_key")
        if name in self._keypairs:
            raise nova_error(409, f"Key pair '{name}' already exists.")
        digest = hashlib.md5(public.encode(), usedforsecurity=False).hexdigest()
        self._keypairs[name] = {
            "name": name, "public_key": public, "type": kp.get("type", "ssh"),
            "fingerprint": ":".join(digest[i : i + 2] for i in range(0, 32, 2)),
            "user_id": USER["id"], "id": len(self._keypairs) + 1, "deleted": False,
            "created_at": iso(time.time()), "updated_at": None, "deleted_at": None}
        return 201, {"keypair": self._keypairs[name]}

    def _keypair_delete(self, name: str, req: Request) -> tuple[int, Any]:
        del self._keypairs[self._keypair(name)["name"]]
        return 204, None

    def _group_list(self, req: Request) -> tuple[int, Any]:
        return 200, {"server_groups": list(self._groups.values())}

    def _group_create(self, req: Request) -> tuple[int, Any]:
        body = req.body.get("server_group") or {}
        policy = body.get("policy") or (body.get("policies") or [""])[0]
        if policy not in ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"):
            raise nova_error(400, f"Invalid input for field/attribute policy: {policy!r}")
        if len(self._groups) >= QUOTAS["server_groups"]:
            raise nova_error(403, "Quota exceeded, too many server groups.")
        gid = str(uuid.uuid4())
        self._groups[gid] = {"id": gid, "name": body.get("name", ""), "policy": policy,
                             "rules": body.get("rules") or {}, "members": [],
                             "project_id": PROJECT["id"], "user_id": USER["id"]}
        return 200, {"server_group": self._groups[gid]}

    def _group_delete(self, gid: str, req: Request) -> tuple[int, Any]:
        if self._groups.pop(gid, None) is None:
            raise nova_error(404, f"Instance group {gid} could not be found.")
        return 204, None

    def _server_view(self, s: Server, now: float) -> dict[str, Any]:
        active = now >= s.posted + self.boot_s
        addresses: dict[str, list[dict[str, Any]]] = {}
        groups: set[str] = set()
        for port in filter(None, map(self._net["ports"].get, s.ports)):
            groups.update(port["security_groups"])
            ips = [("fixed", ip["ip_address"]) for ip in port["fixed_ips"]]
            ips += [("floating", f["floating_ip_address"])
                    for f in self._net["floatingips"].values() if f["port_id"] == port["id"]]
            net = self._net["networks"][port["network_id"]]["name"]
            addresses.setdefault(net, []).extend(
                {"version": 4, "addr": addr, "OS-EXT-IPS:type": kind,
                 "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]} for kind, addr in ips)
        vcpus, ram, disk = FLAVORS[s.flavor]
        return {
            "id": s.id, "name": s.name, "status": "ACTIVE" if active else "BUILD",
            "links": [{"rel": "self", "href": f"{self.url}/compute/v2.1/servers/{s.id}"}],
            "tenant_id": PROJECT["id"], "user_id": USER["id"], "hostId": "sim",
            "metadata": s.fields["metadata"], "tags": s.fields["tags"],
            "key_name": s.fields["key_name"], "image": {"id": self._image["id"]},
            "flavor": {"vcpus": vcpus, "ram": ram, "disk": disk, "ephemeral": 0, "swap": 0,
                       "original_name": s.flavor, "extra_specs": {}},
            "created": iso(s.created),
            "updated": iso(s.deleted_wall or s.created + (self.boot_s if active else 0)),
            "addresses": addresses, "OS-DCF:diskConfig": "MANUAL",
            "OS-EXT-AZ:availability_zone": "nova", "progress": 100 if active else 0,
            "OS-EXT-STS:vm_state": "active" if active else "building",
            "OS-EXT-STS:task_state": "deleting" if s.deleted else None if active else "spawning",
            "OS-EXT-STS:power_state": 1 if active else 0,
            "OS-SRV-USG:launched_at": iso(s.created + self.boot_s) if active else None,
            "OS-SRV-USG:terminated_at": None, "os-extended-volumes:volumes_attached": [],
            "security_groups": [{"name": self._net["security-groups"][g]["name"]}
                                for g in sorted(groups)],
            "server_groups": [s.group] if s.group else [], "locked": False,
            "description": None, "hostname": s.name}

    def _server_matches(self, view: dict[str, Any], req: Request) -> bool:
        tests: dict[str, Callable[[str], Any]] = {
            "name": lambda want: re.search(want, view["name"]),
            "status": lambda want: view["status"] == want.upper(),
            "tags": lambda want: set(want.split(",")) <= set(view["tags"]),
            "changes-since": lambda want: parse_time(view["updated"]) >= parse_time(want),
        }
        for key, values in req.query.items():
            if key in tests and not tests[key](values[-1]):
                return False
            if key not in tests and key not in NOT_FILTERS:
                self.ignored.add(f"servers?{key}")
        return True

    def _server_list(self, detail: str | None, req: Request) -> tuple[int, Any]:
        now = time.monotonic()
        newest_first = sorted(self._servers.values(), key=lambda s: -s.posted)
        views = [self._server_view(s, now) for s in newest_first]
        if "changes-since" in req.query:  # Nova lists what was deleted since, too
            views += reversed(self._gone)
        views = [v for v in views if self._server_matches(v, req)]
        if not detail:
            views = [{k: v[k] for k in ("id", "name", "links")} for v in views]
        return 200, {"servers": views}

    def _server_get(self, sid: str, req: Request) -> tuple[int, Any]:
        if sid not in self._servers:
            raise nova_error(404, f"Instance {sid} could not be found.")
        return 200, {"server": self._server_view(self._servers[sid], time.monotonic())}

    def _server_create(self, req: Request) -> tuple[int, Any, dict[str, str]]:
        body = req.body.get("server") or {}
        # Nova reads either key; openstacksdk sends the second.
        hints = req.body.get("os:scheduler_hints") or req.body.get(
            "OS-SCH-HNT:scheduler_hints") or {}
        name, flavor, key = body.get("name"), body.get("flavorRef"), body.get("key_name")
        lo = int(body.get("min_count", 1))
        hi = int(body.get("max_count", lo))
        nets = body.get("networks")
        nets = [n for n in nets if isinstance(n, dict)] if isinstance(nets, list) else []
        port_ids = [n["port"] for n in nets if n.get("port")]
        net_ids = [n["uuid"] for n in nets if n.get("uuid")] if nets else [
            i for i, n in self._net["networks"].items() if not n["router:external"]]
        group = hints.get("group", "")
        checks = [
            (not name, "Invalid input for field/attribute name."),
            (flavor not in FLAVORS, f"Flavor {flavor} could not be found."),
            (body.get("imageRef") != self._image["id"],
             f"Image {body.get('imageRef')} could not be found."),
            (bool(key) and key not in self._keypairs, "Invalid key_name provided."),
            (len(body.get("user_data") or "") > USER_DATA_MAX, "User data too large."),
            (not 1 <= lo <= hi, "min_count must be >= 1 and <= max_count"),
            # nova/compute/api.py: MultiplePortsNotApplicable
            (bool(port_ids) and hi > 1,
             "Unable to launch multiple instances with a single configured port ID."),
            (bool(group) and group not in self._groups, f"Invalid server group {group}"),
            *((p not in self._net["ports"], f"Port {p} could not be found.") for p in port_ids),
            *((n not in self._net["networks"], f"Network {n} could not be found.")
              for n in net_ids),
        ]
        problem = next((message for bad, message in checks if bad), None)
        if problem:
            raise nova_error(400, problem)
        for pid in port_ids:
            if self._net["ports"][pid]["device_id"]:
                raise nova_error(409, f"Port {pid} is still in use.")
        sgs = [self._find_sg(g.get("name", "")) for g in body.get("security_groups") or []]
        count = self._room(flavor, lo, hi, group)
        made: list[Server] = []
        for i in range(count):
            s = Server(id=str(uuid.uuid4()), name=f"{name}-{i + 1}" if count > 1 else name,
                       flavor=flavor, posted=time.monotonic(), created=time.time(),
                       group=group, fields={"key_name": key, "tags": list(body.get("tags") or []),
                                            "metadata": dict(body.get("metadata") or {})})
            for pid in port_ids:
                self._net["ports"][pid] |= {"device_id": s.id, "device_owner": "compute:nova"}
                s.ports.append(pid)
            for nid in net_ids:
                port = self._new_port({"network_id": nid, "security_groups":
                                       sgs or [self._default_sg]}, device_id=s.id)
                s.ports.append(port["id"])
                s.own_ports.append(port["id"])
            if group:
                self._groups[group]["members"].append(s.id)
            self._servers[s.id] = s
            made.append(s)
        self.peak_servers = max(self.peak_servers, len(self._servers))
        first = self._server_view(made[0], time.monotonic())  # Nova answers with the first
        answer = {k: first[k] for k in ("id", "links", "OS-DCF:diskConfig", "security_groups")}
        answer["adminPass"] = uuid.uuid4().hex[:12]
        return 202, {"server": answer}, {"Location": first["links"][0]["href"]}

    def _find_sg(self, key: str) -> str:
        found = [i for i, g in self._net["security-groups"].items() if key in (i, g["name"])]
        if len(found) != 1:
            raise nova_error(400, f"Security group {key} not found for project {PROJECT['id']}.")
        return found[0]

    def _room(self, flavor: str, lo: int, hi: int, group: str) -> int:
        """How many of lo..hi servers the quotas allow: Nova makes up to max_count."""
        vcpus, ram, _ = FLAVORS[flavor]
        used = self._used()
        room = min(QUOTAS["instances"] - used["instances"],
                   (QUOTAS["cores"] - used["cores"]) // vcpus,
                   (QUOTAS["ram"] - used["ram"]) // ram)
        if group:
            room = min(room, QUOTAS["server_group_members"] - len(self._groups[group]["members"]))
        if room < lo:
            raise nova_error(403, f"Quota exceeded for instances: Requested {lo}, but already "
                                  f"used {used['instances']} of {QUOTAS['instances']} instances")
        return min(hi, room)

    def _server_delete(self, sid: str, req: Request) -> tuple[int, Any]:
        s = self._servers.get(sid)
        if s is None:
            raise nova_error(404, f"Instance {sid} could not be found.")
        if s.deleted is None:
            s.deleted, s.deleted_wall = time.monotonic(), time.time()
        return 204, None

    def _reap(self, now: float) -> None:
        """Servers whose delete has finished go, with the ports Nova made for them."""
        for s in [s for s in self._servers.values() if s.deleted and now >= s.deleted +
                  self.delete_s]:
            self._gone.append(self._server_view(s, now) | {
                "status": "DELETED", "OS-EXT-STS:vm_state": "deleted",
                "OS-EXT-STS:task_state": None, "updated": iso(s.deleted_wall + self.delete_s)})
            for pid in s.ports:
                if pid in s.own_ports:
                    self._forget_port(pid)
                elif pid in self._net["ports"]:
                    self._net["ports"][pid] |= {"device_id": "", "device_owner": ""}
            if s.group in self._groups:
                self._groups[s.group]["members"].remove(s.id)
            del self._servers[s.id]

    # ----------------------------------------------------------------- neutron

    @staticmethod
    def _common(name: str = "", description: str = "") -> dict[str, Any]:
        now = iso(time.time())
        return {"id": str(uuid.uuid4()), "name": name, "description": description, "tags": [],
                "project_id": PROJECT["id"], "tenant_id": PROJECT["id"], "created_at": now,
                "updated_at": now, "revision_number": 1}

    def _room_for(self, kind: str, adding: int = 1) -> None:
        quota = NEUTRON[kind][2]
        if len(self._net[kind]) + adding > QUOTAS[quota]:
            raise neutron_error(409, "OverQuota", f"Quota exceeded for resources: ['{quota}'].")

    def _new_port(self, body: dict[str, Any], *, device_id: str = "") -> dict[str, Any]:
        net = self._one("networks", body.get("network_id", ""))
        sgs = body.get("security_groups")
        for sg in sgs or []:
            self._one("security-groups", sg)
        self._room_for("ports")
        n = next(self._addresses)
        port = self._common(body.get("name", ""), body.get("description", "")) | {
            "network_id": net["id"], "mac_address": f"fa:16:3e:{n >> 8 & 255:02x}:{n & 255:02x}:00",
            "fixed_ips": [{"subnet_id": net["subnets"][0],
                           "ip_address": f"10.0.{n // 250}.{n % 250 + 2}"}],
            "device_id": device_id, "device_owner": "compute:nova" if device_id else "",
            "security_groups": [self._default_sg] if sgs is None else list(sgs),
            "admin_state_up": True, "binding:vnic_type": "normal",
            "port_security_enabled": True, "allowed_address_pairs": []}
        self._net["ports"][port["id"]] = port
        return port

    def _forget_port(self, pid: str) -> None:
        self._net["ports"].pop(pid, None)
        for fip in self._net["floatingips"].values():  # Neutron disassociates, keeps the IP
            if fip["port_id"] == pid:
                fip |= {"port_id": None, "fixed_ip_address": None}

    def _new_security_group(self, name: str, description: str) -> dict[str, Any]:
        self._room_for("security-groups")
        sg = self._common(name, description) | {"stateful": True}
        self._net["security-groups"][sg["id"]] = sg
        for eth in ("IPv4", "IPv6"):
            self._new_rule({"security_group_id": sg["id"], "direction": "egress",
                            "ethertype": eth})
        return sg

    def _new_rule(self, body: dict[str, Any]) -> dict[str, Any]:
        self._one("security-groups", body.get("security_group_id", ""))
        self._room_for("security-group-rules")
        key = {k: body.get(k) for k in RULE_KEYS}
        for other in self._net["security-group-rules"].values():
            if {k: other[k] for k in RULE_KEYS} == key:
                raise neutron_error(409, "SecurityGroupRuleExists", "Security group rule "
                                    f"already exists. Rule id is {other['id']}.")
        rule = self._common(description=body.get("description") or "") | key
        self._net["security-group-rules"][rule["id"]] = rule
        return rule

    def _new_floating_ip(self, body: dict[str, Any]) -> dict[str, Any]:
        ext = self._net["networks"].get(body.get("floating_network_id", ""))
        if ext is None or not ext["router:external"]:
            raise neutron_error(404, "ExternalNetworkNotFound", "External network not found.")
        port = self._one("ports", body["port_id"]) if body.get("port_id") else None
        self._room_for("floatingips")
        fip = self._common(description=body.get("description", "")) | {
            "floating_ip_address": f"203.0.113.{next(self._floating)}",
            "floating_network_id": ext["id"], "router_id": None,
            "port_id": port["id"] if port else None,
            "fixed_ip_address": port["fixed_ips"][0]["ip_address"] if port else None}
        self._net["floatingips"][fip["id"]] = fip
        return fip

    def _view(self, kind: str, res: dict[str, Any]) -> dict[str, Any]:
        if kind == "security-groups":
            return res | {"security_group_rules": [
                r for r in self._net["security-group-rules"].values()
                if r["security_group_id"] == res["id"]]}
        if kind in ("ports", "floatingips"):  # ACTIVE once a server uses the port
            port = res if kind == "ports" else self._net["ports"].get(res["port_id"] or "")
            return res | {"status": "ACTIVE" if port and port["device_id"] else "DOWN"}
        return res

    def _one(self, kind: str, rid: str) -> dict[str, Any]:
        if rid not in self._net[kind]:
            member = NEUTRON[kind][1]
            raise neutron_error(404, member.title().replace("_", "") + "NotFound",
                                f"{member} {rid} could not be found.")
        return self._net[kind][rid]

    def _n_matches(self, kind: str, res: dict[str, Any], req: Request) -> bool:
        for key, values in req.query.items():
            if key in NOT_FILTERS:
                continue
            if key in ("tags", "tags-any"):
                wanted = {t for v in values for t in v.split(",")}
                if not (wanted <= set(res["tags"]) if key == "tags" else wanted & set(res["tags"])):
                    return False
            elif key not in res:
                self.ignored.add(f"{kind}?{key}")
            elif as_query(res[key]) not in {v.lower() if v.lower() in ("true", "false") else v
                                            for v in values}:
                return False
        return True

    def _n_list(self, kind: str, req: Request) -> tuple[int, Any]:
        views = [self._view(kind, r) for r in self._net[kind].values()]
        return 200, {NEUTRON[kind][0]: [v for v in views if self._n_matches(kind, v, req)]}

    def _n_get(self, kind: str, rid: str, req: Request) -> tuple[int, Any]:
        return 200, {NEUTRON[kind][1]: self._view(kind, self._one(kind, rid))}

    def _n_create(self, kind: str, req: Request) -> tuple[int, Any]:
        collection, member, _ = NEUTRON[kind]
        create = {"ports": self._new_port, "security-group-rules": self._new_rule,
                  "floatingips": self._new_floating_ip,
                  "security-groups": lambda b: self._new_security_group(
                      b.get("name", ""), b.get("description", ""))}.get(kind)
        if create is None:
            raise neutron_error(403, "PolicyNotAuthorized", f"simcloud creates no {kind}")
        if collection in req.body:  # a bulk create: all of them or none
            self._room_for(kind, len(req.body[collection]))
            made = [create(item) for item in req.body[collection]]
            return 201, {collection: [self._view(kind, r) for r in made]}
        return 201, {member: self._view(kind, create(req.body.get(member) or {}))}

    def _n_tags(self, kind: str, rid: str, req: Request) -> tuple[int, Any]:
        res = self._one(kind, rid)
        res["tags"] = list(req.body.get("tags") or [])
        return 200, {"tags": res["tags"]}

    def _n_delete(self, kind: str, rid: str, req: Request) -> tuple[int, Any]:
        self._one(kind, rid)
        if kind == "networks":
            raise neutron_error(409, "NetworkInUse", "simcloud deletes no networks")
        if kind == "security-groups":
            if any(rid in p["security_groups"] for p in self._net["ports"].values()):
                raise neutron_error(409, "SecurityGroupInUse", f"Security Group {rid} in use.")
            rules = self._net["security-group-rules"]
            for r in [r for r, v in rules.items() if v["security_group_id"] == rid]:
                del rules[r]
        if kind == "ports":
            self._forget_port(rid)
        self._net[kind].pop(rid, None)
        return 204, None

    def _network_quota(self, project: str, req: Request) -> tuple[int, Any]:
        quota = {q: {"limit": QUOTAS[q], "used": len(self._net[kind]), "reserved": 0}
                 for kind, (_, _, q) in NEUTRON.items()}
        return 200, {"quota": quota}

    # ----------------------------------------------------------------- glance

    def _image_list(self, req: Request) -> tuple[int, Any]:
        image = self._image_get(self._image["id"], req)[1]
        keep = all(as_query(image.get(k)) == v[-1] for k, v in req.query.items()
                   if k in ("name", "id", "status", "visibility"))
        return 200, {"images": [image] if keep else [], "first": "/v2/images",
                     "schema": "/v2/schemas/images"}

    def _image_get(self, image_id: str, req: Request) -> tuple[int, Any]:
        if image_id != self._image["id"]:
            raise Fail(404, {"message": f"No image found with ID {image_id}", "code": "404"})
        return 200, self._image | {"self": f"/v2/images/{image_id}",
                                   "file": f"/v2/images/{image_id}/file"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: openstacksdk's session reuses connections
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("simcloud %s", format % args)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        sim: SimCloud = self.server.sim  # type: ignore[attr-defined]
        status, body, headers = sim.dispatch(self.command, self.path, raw, self.headers)
        data = b"" if status == 204 else json.dumps(body).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if status != 204:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle
