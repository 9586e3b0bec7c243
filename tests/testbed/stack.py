"""A Heat stack on the bed, as a Horizon user makes one from `render --heat`'s template:
the key pair filled in, every other field left at its default (demo.sh's HEAT=1 path).

    python -m tests.testbed.stack create TEMPLATE NAME KEY_NAME   # prints hub_command

(`sparkstack down` deletes the stack.)

Talks to the bed's Heat with openstacksdk (cloud sparkstack-test); waits on the stack's
status, printing it as it changes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import openstack
import yaml

CLOUD = "sparkstack-test"


def _wait(orchestration, stack_id: str, action: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    seen = ""
    while True:
        stack = orchestration.get_stack(stack_id)
        if stack.status != seen:
            seen = stack.status
            print(f"    stack {stack.name}: {seen}", file=sys.stderr, flush=True)
        if seen == f"{action}_COMPLETE":
            return
        if seen.endswith("_FAILED"):
            raise SystemExit(f"stack {stack.name}: {seen}: {stack.status_reason}")
        if time.monotonic() > deadline:
            raise SystemExit(f"stack {stack.name}: still {seen} after {timeout:.0f} s")
        time.sleep(1)


def create(template: Path, name: str, key_name: str) -> None:
    orchestration = openstack.connect(cloud=CLOUD).orchestration
    stack = orchestration.create_stack(
        name=name,
        template=yaml.safe_load(template.read_text()),
        parameters={"key_name": key_name},
    )
    _wait(orchestration, stack.id, "CREATE")
    made = orchestration.get_stack(stack.id)
    outputs = {o["output_key"]: o["output_value"] for o in made.outputs}
    print(outputs["hub_command"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create")
    c.add_argument("template", type=Path)
    c.add_argument("name")
    c.add_argument("key_name")
    args = parser.parse_args()
    create(args.template, args.name, args.key_name)


if __name__ == "__main__":
    main()
