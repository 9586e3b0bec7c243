"""ML2 mechanism driver for the test bed: bind every port on every host, no agents.

Nova refuses a port whose binding failed, and binding normally needs an L2 agent
reporting from the compute host. The test bed has fake compute hosts and no agents, so
this driver binds each port to the first segment it is offered, as an OVS port, and
marks it ACTIVE. It is loaded only by the bed's neutron-server (an entry point in a
directory on that process's PYTHONPATH), never installed system-wide.
"""

from neutron_lib import constants
from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api


class BindAllMechanismDriver(api.MechanismDriver):
    def initialize(self):
        pass

    @property
    def connectivity(self):
        return portbindings.CONNECTIVITY_L2

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(
                segment[api.ID],
                portbindings.VIF_TYPE_OVS,
                {portbindings.CAP_PORT_FILTER: True, portbindings.OVS_HYBRID_PLUG: False},
                status=constants.PORT_STATUS_ACTIVE,
            )
            return
