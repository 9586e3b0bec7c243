"""Real openstacksdk through the fault proxy, against the test bed's real APIs.

These tests pin down what the SDK itself does under faults (documented in the module
docstring of tests/testbed/faultproxy.py): whatever it does not retry, sparkstack's cloud
layer must.
"""

# ruff: noqa: F811  (pytest fixtures imported from the test bed are named as arguments)
from __future__ import annotations

import json
import time
from collections.abc import Iterator

import keystoneauth1.exceptions
import openstack.config
import openstack.connection
import openstack.exceptions
import pytest
import requests

from tests.testbed import bed
from tests.testbed.faultproxy import FaultProxy, RequestKey
from tests.testbed.fixtures import clean_project, testbed  # noqa: F401

pytestmark = pytest.mark.cloud

PROXIED = "proxied"


@pytest.fixture
def proxy(testbed) -> Iterator[FaultProxy]:
    with FaultProxy(upstreams=testbed.endpoints, seed=11) as p:
        yield p


def open_cloud(path) -> openstack.connection.Connection:
    # load_envvars=False: the testbed fixture exports OS_CLIENT_CONFIG_FILE, which
    # openstacksdk would read instead of the file named here.
    config = openstack.config.OpenStackConfig(config_files=[str(path)], load_envvars=False)
    return openstack.connection.Connection(config=config.get_one(cloud=PROXIED))


def connect(proxy: FaultProxy, tmp_path, **kwargs) -> openstack.connection.Connection:
    """A fresh user connection whose only configured URL is the identity proxy's."""
    path = tmp_path / "clouds.yaml"
    proxy.write_clouds_yaml(
        dest=path, source=bed.clouds_yaml_path(), cloud=bed.USER_CLOUD, name=PROXIED, **kwargs
    )
    return open_cloud(path)


def test_auth_url_alone_sends_every_call_through_the_proxies(proxy, tmp_path):
    conn = connect(proxy, tmp_path)
    assert sorted(f.name for f in conn.compute.flavors()) == sorted(bed.FLAVORS)
    assert {n.name for n in conn.network.networks()} >= {"private", "public"}
    assert bed.IMAGE["name"] in {i.name for i in conn.image.images()}
    list(conn.compute.servers())

    # The catalog the SDK got from keystone was rewritten to the proxies.
    assert conn.compute.get_endpoint() == proxy.urls["compute"]
    assert conn.network.get_endpoint().startswith(proxy.urls["network"])
    counts = proxy.counts()
    for key in [
        RequestKey("identity", "POST", "/v3/auth/tokens", False),
        RequestKey("compute", "GET", "/v2.1/flavors/detail", False),
        RequestKey("compute", "GET", "/v2.1/servers/detail", False),
        RequestKey("network", "GET", "/v2.0/networks", False),
        RequestKey("image", "GET", "/v2/images", False),
    ]:
        assert counts.get(key) == 1, proxy.summary()
    # Nothing went around the proxy: every service that was called shows up.
    assert {k.service for k in counts} == {"identity", "compute", "network", "image"}


def test_endpoint_overrides_route_through_the_proxy_too(proxy, tmp_path):
    conn = connect(proxy, tmp_path, endpoint_overrides=True)
    list(conn.compute.flavors())
    list(conn.network.networks())
    assert proxy.total(service="compute", path="/v2.1/flavors/detail") == 1
    assert proxy.total(service="network", path="/v2.0/networks") == 1


def test_sdk_does_not_retry_a_compute_500(proxy, tmp_path):
    conn = connect(proxy, tmp_path)
    proxy.script(method="GET", path=r"^/v2\.1/servers/detail", status=500)
    with pytest.raises(openstack.exceptions.HttpException) as err:
        list(conn.compute.servers())
    assert err.value.status_code == 500
    assert proxy.total(method="GET", path="/v2.1/servers/detail") == 1, proxy.summary()
    # The next call is fine: the caller has to be the one that tries again.
    list(conn.compute.servers())
    assert proxy.total(method="GET", path="/v2.1/servers/detail", faulted=False) == 1


def test_sdk_does_not_retry_a_compute_503_unless_configured(proxy, tmp_path):
    conn = connect(proxy, tmp_path)
    proxy.script(method="GET", path=r"^/v2\.1/flavors/detail", status=503)
    with pytest.raises(openstack.exceptions.HttpException):
        list(conn.compute.flavors())
    assert proxy.total(path="/v2.1/flavors/detail") == 1

    # compute_status_code_retries in clouds.yaml turns keystoneauth's retry on (429, 503).
    source = bed.read_clouds()["clouds"][bed.USER_CLOUD]
    entry = {**source, "compute_status_code_retries": 2, "compute_status_code_retry_delay": 0.1}
    path = tmp_path / "retrying.yaml"
    proxy.write_clouds_yaml(dest=path, source=entry, name=PROXIED)
    conn = open_cloud(path)
    proxy.reset_counts()
    proxy.script(method="GET", path=r"^/v2\.1/flavors/detail", status=503, times=2)
    assert len(list(conn.compute.flavors())) == len(bed.FLAVORS)
    assert proxy.total(path="/v2.1/flavors/detail", faulted=True) == 2
    assert proxy.total(path="/v2.1/flavors/detail", faulted=False) == 1


def test_sdk_retries_image_503_but_not_image_500(proxy, tmp_path):
    conn = connect(proxy, tmp_path)
    list(conn.image.images())  # version discovery out of the way
    proxy.reset_counts()
    proxy.script(method="GET", path=r"^/v2/images", status=503)
    started = time.monotonic()
    assert bed.IMAGE["name"] in {i.name for i in conn.image.images()}
    assert time.monotonic() - started >= 0.5  # keystoneauth's first retry delay
    assert proxy.total(path="/v2/images") == 2
    proxy.script(method="GET", path=r"^/v2/images", status=500)
    with pytest.raises(openstack.exceptions.HttpException):
        list(conn.image.images())
    assert proxy.total(path="/v2/images") == 3


def test_sdk_does_not_retry_a_reset_and_raises_keystoneauth_errors(proxy, tmp_path):
    conn = connect(proxy, tmp_path)
    list(conn.network.networks())
    proxy.script(method="GET", path=r"^/v2\.0/networks", reset=True)
    with pytest.raises(keystoneauth1.exceptions.ConnectFailure) as err:
        list(conn.network.networks())
    # Not an SDKException: code catching only openstack.exceptions misses it.
    assert not isinstance(err.value, openstack.exceptions.SDKException)
    assert proxy.total(path="/v2.0/networks") == 2
    assert [n.name for n in conn.network.networks()]


def test_scripted_quota_answer_has_the_shape_of_the_real_one(proxy, clean_project, tmp_path):
    """Nova (Zed) answers an over-quota create with 403 {"forbidden": ...}; the proxy's
    scripted answer must look the same to the SDK."""
    admin = clean_project.admin()
    pid = bed.project_id(admin)
    image = admin.image.find_image(bed.IMAGE["name"], ignore_missing=False)
    flavor = admin.compute.find_flavor("m1.tiny", ignore_missing=False)
    net = admin.network.find_network(bed.PRIVATE_NET["name"], ignore_missing=False)
    conn = connect(proxy, tmp_path)
    create = {
        "name": "fp-quota",
        "image_id": image.id,
        "flavor_id": flavor.id,
        "networks": [{"uuid": net.id}],
    }
    admin.set_compute_quotas(pid, instances=0)
    try:
        with pytest.raises(openstack.exceptions.HttpException) as real:
            conn.compute.create_server(**create)
    finally:
        bed.reset_quotas(admin)
    proxy.script(method="POST", path=r"/servers$", status=403)
    with pytest.raises(openstack.exceptions.HttpException) as scripted:
        conn.compute.create_server(**create)
    assert real.value.status_code == scripted.value.status_code == 403
    assert "Quota exceeded for instances" in str(real.value)
    assert "Quota exceeded for instances" in str(scripted.value)
    real_body = real.value.response.json()
    assert set(real_body) == set(scripted.value.response.json()) == {"forbidden"}


def test_forwarded_fault_creates_the_server_but_the_client_sees_500(proxy, clean_project, tmp_path):
    """The case cleanup-by-tag exists for: the cloud acted, the answer was lost."""
    admin = clean_project.admin()
    image = admin.image.find_image(bed.IMAGE["name"], ignore_missing=False)
    flavor = admin.compute.find_flavor("m1.tiny", ignore_missing=False)
    net = admin.network.find_network(bed.PRIVATE_NET["name"], ignore_missing=False)
    conn = connect(proxy, tmp_path)
    proxy.script(method="POST", path=r"/servers$", status=500, forward=True)
    with pytest.raises(openstack.exceptions.HttpException):
        conn.compute.create_server(
            name="fp-lost-answer",
            image_id=image.id,
            flavor_id=flavor.id,
            networks=[{"uuid": net.id}],
        )
    orphans = [s for s in conn.compute.servers() if s.name == "fp-lost-answer"]
    assert len(orphans) == 1
    conn.compute.delete_server(orphans[0].id)
    conn.compute.wait_for_delete(orphans[0], interval=1, wait=60)


def test_raw_version_document_links_point_at_the_proxy(proxy):
    doc = requests.get(proxy.urls["identity"], timeout=10).json()
    hrefs = [link["href"] for link in doc["version"]["links"] if link.get("rel") == "self"]
    assert hrefs and all(h.startswith(proxy.urls["identity"].rsplit("/", 1)[0]) for h in hrefs)
    upstream = bed.endpoints()["identity"].rsplit("/", 1)[0]
    assert upstream not in json.dumps(doc)
