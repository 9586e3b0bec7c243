"""Heat stacks that own a cluster (`render --heat`): removed as a whole, through Heat, so
the stack never points at resources someone deleted under it."""

from __future__ import annotations

import time
from typing import Any

from provisioner.cloud.connection import CloudBase
from provisioner.errors import CloudError

# Heat's own pace: a stack's status is worth a look about once a second.
_POLL = 1.0


class StackWriter(CloudBase):
    def resize_stack(self, name: str, *, workers: int, timeout: float = 900) -> None:
        """Set the stack's worker_count, keeping every other parameter and the template
        (Heat's PATCH: `openstack stack update --existing`), and wait for the update."""
        orchestration = self.conn.orchestration
        stack = self.call("find stack",
                          lambda: orchestration.find_stack(name, ignore_missing=False),
                          resource=name)  # fmt: skip
        before = stack.updated_at
        self.call(
            "update stack",
            lambda: orchestration.patch(
                f"/stacks/{stack.name}/{stack.id}",
                json={"parameters": {"worker_count": workers}},
                raise_exc=True,
            ),
            resource=name,
        )
        deadline = time.monotonic() + timeout
        while True:
            current = self.call("show stack", lambda: orchestration.get_stack(stack.id),
                                resource=name)  # fmt: skip
            status = str(current.status)
            # until Heat has taken the update up, the stack still shows the last one's end
            if current.updated_at != before:
                if status == "UPDATE_COMPLETE":
                    return
                if status == "UPDATE_FAILED":
                    raise CloudError(
                        f"Heat could not resize stack {name}: {current.status_reason}",
                        hint="see the stack's events in Horizon (Project > Orchestration > "
                        f"Stacks > {name}); `sparkstack scale` again retries",
                    )
            if time.monotonic() > deadline:
                raise CloudError(f"stack {name} is still {status} after {timeout:.0f} s",
                                 hint="run `sparkstack scale` again to wait for it")  # fmt: skip
            time.sleep(_POLL)

    def delete_stack(self, name: str, *, timeout: float = 600) -> None:
        """Delete the stack and wait until Heat says it is gone."""
        orchestration = self.conn.orchestration

        def find(key: str) -> Any:
            return orchestration.find_stack(key, ignore_missing=True)

        stack = self.call("find stack", lambda: find(name), resource=name)
        if stack is None:
            return
        self.call("delete stack", lambda: orchestration.delete_stack(stack.id), resource=name)
        deadline = time.monotonic() + timeout
        while True:
            # by id: a deleted stack stays readable by id as DELETE_COMPLETE, or is gone
            current = self.call("show stack", lambda: find(stack.id), resource=name)
            status = "" if current is None else str(current.status)
            if current is None or status == "DELETE_COMPLETE":
                return
            if status == "DELETE_FAILED":
                raise CloudError(
                    f"Heat could not delete stack {name}: {current.status_reason}",
                    hint=f"run `sparkstack down` again, or delete the stack in Horizon "
                    f"(Project > Orchestration > Stacks) or with `openstack stack delete {name}`",
                )
            if time.monotonic() > deadline:
                raise CloudError(
                    f"stack {name} is still {status or 'there'} after {timeout:.0f} s",
                    hint="run `sparkstack down` again to wait for it",
                )
            time.sleep(_POLL)
