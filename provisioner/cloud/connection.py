"""The OpenStack connection: connect, and one way to call the API (retry on transient
failures, CloudError on anything else) that every other cloud module goes through.

Why the cloud edge is a package of its own: openstacksdk's convenient calls have traps for a
cluster tool (auto_ip on by default, search filters silently ignored, one poll per server,
re-resolving image/flavor/network on every create, delete-by-object looking the object up as
a name). Here every call is a plain proxy call with ids, every resource gets the cluster's
identity in the same request that creates it, and nothing without that identity is changed.

Transient failures (5xx, connection resets) are retried with tenacity right here; 4xx are
not retried (a quota or a bad request fails the same way again) and become CloudError.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import openstack
import openstack.config
import openstack.connection
import openstack.exceptions as os_exc
import tenacity
from keystoneauth1 import exceptions as ksa_exc

from provisioner.errors import CloudError, UserInputError
from provisioner.inventory.names import cluster_tag, identity_description, identity_tags

log = logging.getLogger(__name__)

T = TypeVar("T")

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
# What openstacksdk and keystoneauth raise for an API answer or a failed request.
API_ERRORS = (os_exc.SDKException, ksa_exc.ClientException)


def status_of(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None) or getattr(exc, "http_status", None)
    try:
        return int(code) if code is not None else None
    except (TypeError, ValueError):
        return None


def is_transient(exc: BaseException) -> bool:
    """5xx answers and broken connections: worth another try. Never a 4xx, and never a
    Ctrl-C: keystoneauth sleeps between its own retries inside an `except`, so an
    interrupt there carries a connection error as its context, and tenacity (which sees
    every BaseException) would try again."""
    if not isinstance(exc, Exception):
        return False
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, ksa_exc.ConnectionError | ConnectionError):
            return True
        if type(link).__name__ in {"ConnectionError", "ChunkedEncodingError", "ReadTimeout"}:
            return True  # requests' own, without importing requests for it
        code = status_of(link)
        if code is not None:
            return code >= 500
        link = link.__cause__ or link.__context__
    return False


# A service's version document that answered 5xx or not at all: keystoneauth swallows the
# failure and openstacksdk then raises NotSupported ("... does not have any supported
# versions") or ServiceDiscoveryException, with no trace of the 5xx.
# Nothing is cached for a failed discovery, so another try asks again; a few tries only,
# since a cloud that really lacks the service says the same every time.
DISCOVERY_TRIES = 4


class _DiscoveryRetry(tenacity.retry_base):
    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None or not outcome.failed:
            return False
        exc = outcome.exception()
        discovery = isinstance(exc, os_exc.ServiceDiscoveryException) or (
            isinstance(exc, os_exc.NotSupported) and "supported versions" in str(exc)
        )
        return discovery and retry_state.attempt_number < DISCOVERY_TRIES


def describe_error(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    code = status_of(exc)
    text = str(details or exc).strip()
    return f"HTTP {code}: {text}" if code else text


# Seconds one request may take before it fails (and is retried as transient). Without
# one, keystoneauth waits for ever on a cloud that accepts the connection and never
# answers, and so would every command.
DEFAULT_API_TIMEOUT = 60.0


def connect(
    cloud: str = "", *, api_timeout: float | None = None
) -> openstack.connection.Connection:
    """clouds.yaml entry `cloud`, else OS_CLOUD, else the OS_* variables (application
    credentials included: keystoneauth picks the plugin from what is set).

    Every request gets a timeout: `api_timeout` when given, else the cloud's own
    `api_timeout` from clouds.yaml, else DEFAULT_API_TIMEOUT."""
    try:
        region = openstack.config.get_cloud_region(cloud=cloud or None, app_name="sparkstack")
    # A cloud name missing from clouds.yaml is a ConfigException ("Cloud x was not found"),
    # missing credentials a keystoneauth error: those are the user's to fix. Anything else
    # out of the loader is a bug (ours or openstacksdk's), reported as one with the log.
    except (os_exc.ConfigException, ksa_exc.ClientException) as exc:
        raise UserInputError(
            f"cannot load the cloud configuration{f' {cloud!r}' if cloud else ''}: {exc}",
            step="connect",
            hint="set cluster.cloud to an entry of clouds.yaml, or OS_CLOUD, or source an "
            "openrc file",
        ) from exc
    # openstacksdk hands config["api_timeout"] to the keystoneauth Session it makes on
    # first use (CloudRegion.get_session), which applies it to every request, auth too.
    if api_timeout is not None or region.config.get("api_timeout") is None:
        region.config["api_timeout"] = api_timeout or DEFAULT_API_TIMEOUT
    return openstack.connection.Connection(config=region)


class CloudBase:
    """One cluster's view of one OpenStack project: the connection and the call plumbing
    that the read and write halves share."""

    def __init__(self, conn: Any, *, cluster: str, retry_for: float = 120.0) -> None:
        self.conn = conn
        self.cluster = cluster
        self.retry_for = retry_for
        self.tags = identity_tags(cluster)
        self.description = identity_description(cluster)

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        """Whether a failed call may succeed if tried again (for callers that must not
        import openstack to tell)."""
        return is_transient(exc)

    def _retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient) | _DiscoveryRetry(),
            wait=tenacity.wait_exponential(multiplier=0.3, max=5),
            stop=tenacity.stop_after_delay(self.retry_for),
            before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
            reraise=True,
        )

    def call(self, what: str, fn: Callable[[], T], *, resource: str | None = None) -> T:
        """Run one API call with retries on transient errors; anything else -> CloudError."""
        try:
            return self._retrying()(fn)
        except API_ERRORS as exc:
            code = status_of(exc)
            hint = None
            if code in (403, 413) and "quota" in str(exc).lower():
                hint = "raise the project's quota or make the cluster smaller"
            elif code == 401:
                hint = "check the credentials in clouds.yaml / OS_* variables"
            elif code and code >= 500:
                hint = f"the cloud kept failing for {self.retry_for:.0f}s; try again later"
            elif is_transient(exc):
                hint = (
                    f"the cloud could not be reached for {self.retry_for:.0f}s: check the "
                    "auth_url in clouds.yaml (or OS_AUTH_URL) and the network, or try again later"
                )
            raise CloudError(
                f"{what} failed: {describe_error(exc)}", resource=resource, hint=hint
            ) from exc

    def create_once(
        self,
        what: str,
        create: Callable[[], T],
        find: Callable[[], T | None],
        *,
        resource: str,
    ) -> T:
        """A POST is not idempotent: after a lost answer, look before creating again."""
        attempt = 0

        def go() -> T:
            nonlocal attempt
            attempt += 1
            if attempt > 1:
                found = find()
                if found is not None:
                    log.info("%s: found it after a failed answer, not creating again", resource)
                    return found
            return create()

        return self.call(what, go, resource=resource)

    def _list(self, what: str, fn: Callable[[], Iterable[T]]) -> list[T]:
        return self.call(what, lambda: list(fn()))

    def _tag(self, res: Any, what: str) -> None:
        """Neutron (Zed) refuses `tags` in a POST body, so tags follow in a PUT; the
        description set in the POST is what makes the resource ours without a gap."""
        if not set(self.tags) <= set(res.tags or []):
            self.call("tag", lambda: self.conn.network.set_tags(res, self.tags), resource=what)

    def _ours(self, res: Any) -> bool:
        tags = set(getattr(res, "tags", None) or [])
        return cluster_tag(self.cluster) in tags or (
            getattr(res, "description", None) == self.description
        )
