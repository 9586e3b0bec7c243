"""The whole inventory: its tables, the checks that span them, and the names it implies."""

from __future__ import annotations

from pydantic import Field, model_validator

from provisioner.inventory import names
from provisioner.inventory.fields import KeyProblems, Table, memory_mib, show
from provisioner.inventory.infra import (
    ClusterConfig,
    MasterConfig,
    NetworkConfig,
    SshConfig,
    WorkersConfig,
)
from provisioner.inventory.limits import NOTEBOOK_EXTRA_MIB
from provisioner.inventory.mirrors import MirrorsConfig
from provisioner.inventory.services import JupyterHubConfig, SparkConfig


class Inventory(Table):
    """A validated inventory. Build it with :func:`load_inventory` or :func:`parse_inventory`."""

    cluster: ClusterConfig
    network: NetworkConfig
    ssh: SshConfig = Field(default_factory=SshConfig)
    master: MasterConfig
    workers: WorkersConfig
    spark: SparkConfig = Field(default_factory=SparkConfig)
    jupyterhub: JupyterHubConfig = Field(default_factory=JupyterHubConfig)
    mirrors: MirrorsConfig = Field(default_factory=MirrorsConfig)

    @model_validator(mode="after")
    def _users_not_login_user(self) -> Inventory:
        if self.ssh.user in self.jupyterhub.users:
            raise KeyProblems(
                [
                    (
                        "jupyterhub.users",
                        f"{show(self.ssh.user)} is ssh.user (it has sudo); hub users must "
                        "be other accounts",
                    )
                ]
            )
        return self

    @model_validator(mode="after")
    def _notebook_fits_its_limit(self) -> Inventory:
        limit = self.jupyterhub.limits.memory_limit_mib()
        driver = self.spark.limits.driver_memory
        need = memory_mib(driver) + NOTEBOOK_EXTRA_MIB
        if limit is not None and limit < need:
            raise KeyProblems(
                [
                    (
                        "jupyterhub.limits.memory",
                        f"{show(self.jupyterhub.limits.memory)} ({limit} MiB) is less than one "
                        f"notebook needs: spark.limits.driver_memory {show(driver)} plus "
                        f"{NOTEBOOK_EXTRA_MIB} MiB for its JVM, server and kernel = {need} "
                        "MiB; every PySpark kernel would be killed as it starts. Raise it "
                        "or lower driver_memory",
                    )
                ]
            )
        return self

    # Names every module must agree on. Pure functions of the cluster name.
    def keypair_name(self) -> str:
        """The Nova keypair to use: the given one, or the generated one for this cluster."""
        return self.ssh.keypair or names.generated_keypair_name(self.cluster.name)

    def keypair_is_generated(self) -> bool:
        return self.ssh.keypair is None

    def security_group_name(self) -> str:
        return names.security_group_name(self.cluster.name)

    def server_group_name(self) -> str:
        return names.server_group_name(self.cluster.name)

    def master_name(self) -> str:
        return names.master_server_name(self.cluster.name)

    def worker_name(self, index: int) -> str:
        return names.worker_server_name(self.cluster.name, index)

    def worker_names(self) -> list[str]:
        """Names of the workers this inventory asks for: <name>-worker-1 .. -<count>."""
        return [self.worker_name(i) for i in range(1, self.workers.count + 1)]

    def tag(self) -> str:
        return names.cluster_tag(self.cluster.name)

