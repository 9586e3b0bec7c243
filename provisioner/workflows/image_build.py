"""`image build`: a stock image in, a Glance image that holds everything a node installs out.

The builder is a one-node deployment of its own (cluster ``<cluster>-builder``: its own
security group open to SSH only, its own keypair, a floating IP), made and removed by the
same workflows as a cluster, so every failure and Ctrl-C cleans up the way `down` does.
It boots the image role of the node boot script (the same steps, one recipe), and once its
ready marker is there: seal (forget the builder) -> stop -> createImage -> Glance active ->
properties final -> builder removed. Any failure removes the builder and a half-made image.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioner import plan as P
from provisioner.baked import RECORD_TO_PROPERTY, differences
from provisioner.errors import CloudError, PreflightError, RemoteError
from provisioner.inventory import Inventory
from provisioner.keys import config_dir, generated_key_path
from provisioner.render import IMAGE_ROLE, READY_MARKER
from provisioner.workflows.context import Reporter, Settings
from provisioner.workflows.down import down
from provisioner.workflows.ports import Cloud
from provisioner.workflows.up import up

if TYPE_CHECKING:  # the image calls are the real edge's; only commands import it
    from provisioner.cloud.images import ImageCloud

log = logging.getLogger(__name__)

BUILDER_SUFFIX = "-builder"
_GONE = {"killed", "deleted", "pending_delete", "deactivated"}


def builder_name(cluster: str) -> str:
    return cluster + BUILDER_SUFFIX


def builder_desired(inv: Inventory, *, source: str) -> P.Desired:
    """One server from `source`, SSH from the inventory's CIDRs only, a keypair of its own."""
    return P.Desired(
        cluster=builder_name(inv.cluster.name),
        workers=0,
        master_flavor=inv.master.flavor,
        worker_flavor=inv.workers.flavor,
        image=source,
        network=inv.network.name,
        floating_ip_pool=inv.network.floating_ip_pool or "",
        allowed_cidrs=tuple(inv.network.allowed_cidrs),
        open_ports=(22,),
        anti_affinity="none",
    )


@dataclass
class Built:
    image_id: str
    name: str
    properties: dict[str, str]
    size: int
    seconds: dict[str, float]


class _Phases:
    """Phase names with their durations, announced as they start."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.seconds: dict[str, float] = {}
        self._name, self._t0 = "", 0.0

    def __call__(self, name: str, text: str) -> None:
        self.end()
        self._name, self._t0 = name, time.monotonic()
        self.reporter.step(text)

    def end(self) -> None:
        if self._name:
            self.seconds[self._name] = round(time.monotonic() - self._t0, 1)
            self._name = ""


def _wait(what: str, probe: Callable[[], Any], done: Callable[[Any], bool], *,
          timeout: float, reporter: Reporter, show: Callable[[Any], str],
          resource: str) -> Any:  # fmt: skip
    """Poll `probe` until `done`, saying what it sees at least every 10 s; polls grow
    from 1 s to 5 s (a snapshot of gigabytes takes minutes, a stop seconds)."""
    started = time.monotonic()
    said, last, pause = 0.0, None, 1.0
    while True:
        value = probe()
        if done(value):
            return value
        now = time.monotonic()
        text = show(value)
        if text != last or now - said >= 10:
            reporter.step(f"{what}: {text} ({now - started:.0f} s)")
            said, last = now, text
        if now - started > timeout:
            raise CloudError(f"{what}: still {text} after {timeout:.0f} s", resource=resource)
        time.sleep(pause)
        pause = min(5.0, pause * 1.5)


def _smallest_disk(builder: Cloud, desired: P.Desired, reporter: Reporter) -> P.Desired:
    """The builder on whichever of the cluster's flavors has the smaller root disk: a
    snapshot needs at least its builder's disk (Nova sets its min_disk so, and its virtual
    size is that disk), so an image built on the master's flavor may not boot the workers'."""
    resolved, _ = builder.resolve(desired)
    if resolved is None:  # preflight names what is wrong
        return desired
    master = resolved.flavors[desired.master_flavor]
    worker = resolved.flavors[desired.worker_flavor]
    if worker.disk < master.disk:
        reporter.step(f"builder flavor {desired.worker_flavor} ({worker.disk} GB disk): "
                      "the image must fit both the master's and the workers' flavors")  # fmt: skip
        return dataclasses.replace(desired, master_flavor=desired.worker_flavor)
    return desired


def _record(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def leftovers(builder: Cloud, images: ImageCloud, name: str) -> list[str]:
    """What an earlier build of this builder left (servers, its group, keypair, images)."""
    found = [n.name for n in builder.observe().nodes]
    found += [f"image {i.name} ({i.id})" for i in images.building_images(name)]
    return found


def clean_up(inv: Inventory, *, builder: Cloud, images: ImageCloud, reporter: Reporter,
             image_id: str = "") -> list[str]:  # fmt: skip
    """Remove the builder (as `down` would) and this build's or an earlier build's
    unfinished image; what was deleted."""
    name = builder_name(inv.cluster.name)
    deleted = []
    ids = {image_id} if image_id else set()
    ids |= {i.id for i in images.building_images(name)}
    for one in sorted(ids):
        info = images.image(one)
        if info is not None and info.properties.get("sparkstack_build") != "complete":
            reporter.step(f"deleting the unfinished image {info.name} ({one})")
            images.delete_image(one, name=info.name)
            deleted.append(f"image {info.name}")
    res = down(inv, cloud=builder, reporter=reporter, desired=builder_desired(inv, source=""),
               key_dir=config_dir(name), settings=Settings(max_parallel=4))  # fmt: skip
    return deleted + res.deleted


def build(inv: Inventory, *, builder: Cloud, images: ImageCloud, user_data: str, source: str,
          image_name: str, reporter: Reporter, stop_timeout: float = 600,
          snapshot_timeout: float = 3600,
          on_stopped: Callable[[bool], None] = lambda removed: None) -> Built:  # fmt: skip
    """Build the image (see the module doc); on any failure or interruption the builder and
    the unfinished image are removed before the error goes on, and `on_stopped` hears
    whether that removal succeeded."""
    from provisioner.workflows.ssh_stage import Access, bring_up

    name = builder_name(inv.cluster.name)
    key_dir = config_dir(name)
    desired = _smallest_disk(builder, builder_desired(inv, source=source), reporter)
    phases = _Phases(reporter)
    image_id = ""
    try:
        if leftovers(builder, images, name):
            phases("leftovers", f"removing what an earlier build left ({name})")
            clean_up(inv, builder=builder, images=images, reporter=reporter)
        phases("server", f"creating the builder {name} from {source}")
        res = up(inv, cloud=builder, user_data=lambda role, ip: user_data, reporter=reporter,
                 until="servers", key_dir=key_dir, desired=desired,
                 settings=Settings(max_parallel=1))  # fmt: skip
        observed = res.observed
        assert observed is not None
        node = observed.master()
        assert node is not None
        phases("install", "waiting for the builder's boot: it installs everything a node "
                          "needs (the node boot script's steps)")  # fmt: skip
        access = Access(user=inv.ssh.user, key_file=generated_key_path(key_dir),
                        trust=inv.ssh.host_key_trust, known_hosts_dir=key_dir,
                        boot_timeout=inv.ssh.boot_timeout)  # fmt: skip
        nodes = bring_up(observed, cloud=builder, access=access, reporter=reporter)
        try:
            ready = _record((nodes.master.read(READY_MARKER, sudo=True) or b"").decode())
            if ready.get("role") != IMAGE_ROLE:
                raise RemoteError(f"{READY_MARKER} does not describe an image: {ready}",
                                  resource=node.name, step="install")  # fmt: skip
            properties = {RECORD_TO_PROPERTY[k]: v for k, v in ready.items()
                          if k in RECORD_TO_PROPERTY}  # fmt: skip
            wrong = differences(properties, inv)
            if wrong:
                raise RemoteError(
                    "the builder holds something else than asked: " + "; ".join(wrong),
                    resource=node.name,
                    step="install",
                )
            phases("seal", "sealing the builder (cloud-init state, host keys, machine id, "
                           "its login key, apt lists, logs)")  # fmt: skip
            nodes.master.run("/usr/local/sbin/sparkstack-bootstrap seal", sudo=True,
                             timeout=300)  # fmt: skip
        finally:
            nodes.close()
        phases("stop", f"stopping {node.name}")
        images.stop_server(node.id, name=node.name)
        _wait(
            "builder",
            lambda: images.server_status(node.id),
            lambda s: s == "SHUTOFF",
            timeout=stop_timeout,
            reporter=reporter,
            show=str,
            resource=node.name,
        )
        phases("snapshot", f"snapshotting {node.name} into image {image_name}")
        metadata = {**properties, "sparkstack_build": name,
                    "sparkstack_source_image": source}  # fmt: skip
        image_id = images.snapshot(node.id, image_name=image_name, metadata=metadata,
                                   name=node.name)  # fmt: skip
        reporter.step(f"image {image_name} ({image_id}) is being made")

        def show(info: Any) -> str:
            if info is None:
                return "not listed yet"
            size = f", {info.size / 2**20:.0f} MiB" if info.size else ""
            return f"{info.status}{size}"

        def done(info: Any) -> bool:
            if info is not None and info.status in _GONE:
                raise CloudError(f"the snapshot failed: image {image_name} is {info.status}",
                                 resource=image_name,
                                 hint="the cloud's Nova/Glance logs say why")  # fmt: skip
            return info is not None and info.status == "active"

        final = _wait("image", lambda: images.image(image_id), done, timeout=snapshot_timeout,
                      reporter=reporter, show=show, resource=image_name)  # fmt: skip
        images.mark_complete(image_id)
        phases("cleanup", f"removing the builder {name}")
        clean_up(inv, builder=builder, images=images, reporter=reporter)
        phases.end()
        return Built(image_id=image_id, name=image_name, properties=properties,
                     size=final.size, seconds=phases.seconds)  # fmt: skip
    except PreflightError:
        raise  # the builder's preflight: nothing was created
    except BaseException:
        phases.end()
        reporter.step(f"the build stopped: removing the builder {name} and any unfinished image")
        try:
            clean_up(inv, builder=builder, images=images, reporter=reporter, image_id=image_id)
        except Exception:
            log.exception("cleaning up after a failed build failed")
            reporter.step(
                f"could not remove everything: `sparkstack image build` or "
                f"`sparkstack down` removes what is left of {name}"
            )
            on_stopped(False)
        else:
            on_stopped(True)
        raise


def default_name(inv: Inventory) -> str:
    """<cluster>-spark<version>-<yyyymmdd-hhmm>: sorts by date, says what it holds."""
    stamp = time.strftime("%Y%m%d-%H%M", time.gmtime())
    return f"sparkstack-spark{inv.spark.version}-{stamp}"


def key_dir_of_builder(cluster: str) -> Path:
    return config_dir(builder_name(cluster))


def left_behind(builder: str, removed: bool) -> str:
    """What a stopped build leaves, in the words of the error it ends with."""
    if removed:
        return f"the builder {builder} and any unfinished image were removed"
    return (f"the builder {builder} could not be removed: `sparkstack image build` or "
            "`sparkstack down` removes what is left")  # fmt: skip


def failed_hint(hint: str | None, builder: str, removed: bool = True) -> str:
    """A failed build's hint: the cause's own advice, without the cluster's "partly there"
    advice (the build removes its builder itself), plus what was removed."""
    from provisioner.workflows.guard import undo_hint

    undo = undo_hint("up", builder)
    parts = [p for p in (hint or "").replace(undo, "").split("; ") if p.strip()]
    if not removed:
        parts.append(left_behind(builder, removed))
        return "; ".join(parts)
    parts.append(
        f"the builder {builder} and any unfinished image were removed; fix the "
        "cause and run `sparkstack image build` again"
    )
    return "; ".join(parts)
