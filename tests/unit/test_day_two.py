"""The pure parts of the day-two commands: which node a NODE argument names, what the
decommission poll reads out of the master's and the workers' status pages, and when a
leaving worker counts as drained."""

from __future__ import annotations

import json

import pytest

from provisioner import plan as P
from provisioner.commands.nodes import _log_command, resolve_node
from provisioner.errors import UserInputError
from provisioner.workflows.decommission import _MARK, Drain, _parse
from provisioner.workflows.live import spark_states


def _observed() -> P.Observed:
    nodes = (
        P.Node("c-master", P.MASTER, 0, "m", "ACTIVE", "10.0.0.2", "192.0.2.9"),
        P.Node("c-worker-1", P.WORKER, 1, "w1", "ACTIVE", "10.0.0.3"),
        P.Node("c-worker-12", P.WORKER, 12, "w12", "ACTIVE", "10.0.0.4"),
    )
    return P.Observed(cluster="c", nodes=nodes)


@pytest.mark.parametrize(
    ("spec", "name"),
    [("master", "c-master"), ("c-master", "c-master"), ("1", "c-worker-1"),
     ("worker-12", "c-worker-12"), ("c-worker-12", "c-worker-12"), (" 12 ", "c-worker-12")],
)  # fmt: skip
def test_a_node_is_named_by_role_number_short_or_full_name(spec: str, name: str) -> None:
    assert resolve_node(_observed(), spec).name == name


@pytest.mark.parametrize("spec", ["0", "2", "worker-2", "c-worker", "", "Master"])
def test_an_unknown_node_is_a_user_error_listing_the_nodes(spec: str) -> None:
    with pytest.raises(UserInputError) as caught:
        resolve_node(_observed(), spec)
    assert "c-master, c-worker-1, c-worker-12" in (caught.value.hint or "")


def test_the_poll_output_splits_per_url_and_survives_a_page_that_did_not_answer() -> None:
    master = {"workers": [{"host": "10.0.0.3", "state": "DECOMMISSIONED"}]}
    text = "\n".join([
        _MARK + "http://m/json/", json.dumps(master, indent=2),
        _MARK + "http://w1/json/", json.dumps({"executors": [{"id": 1}]}),
        _MARK + "http://w2/json/", "",
        _MARK + "http://w3/json/", "<html>not json</html>",
    ])  # fmt: skip
    found = _parse(text)
    assert found == {"http://m/json/": master, "http://w1/json/": {"executors": [{"id": 1}]},
                     "http://w2/json/": None, "http://w3/json/": None}  # fmt: skip


@pytest.mark.parametrize(
    ("state", "executors", "drained", "text"),
    [("ALIVE", 0, False, "decommissioning"),  # the master has not heard yet
     ("DECOMMISSIONED", 2, False, "draining, 2 executors left"),
     ("DECOMMISSIONED", 1, False, "draining, 1 executor left"),
     ("DECOMMISSIONED", 0, True, "drained"),
     ("DECOMMISSIONED", None, True, "drained"),  # its UI is gone: the daemon stopped
     ("DEAD", 1, False, "draining, 1 executor left"),
     ("absent", None, True, "drained")],
)  # fmt: skip
def test_drained_means_not_alive_on_the_master_and_no_executor_on_the_worker(
    state: str, executors: int | None, drained: bool, text: str
) -> None:
    d = Drain("c-worker-1", "10.0.0.3", state, executors)
    assert (d.drained, d.describe()) == (drained, text)


def test_spark_states_take_the_newest_registration_and_mark_the_unlisted_absent() -> None:
    status = {"status": "ALIVE", "workers": [
        {"id": "worker-20260101000000-10.0.0.3-7078", "host": "10.0.0.3", "state": "DEAD",
         "cores": 2, "coresused": 0, "memory": 1024, "memoryused": 0},
        {"id": "worker-20260101000100-10.0.0.3-7078", "host": "10.0.0.3", "state": "ALIVE",
         "cores": 2, "coresused": 1, "memory": 1024, "memoryused": 512},
    ]}  # fmt: skip
    states = spark_states(status, _observed())
    assert states["c-master"] == {"state": "ALIVE"}
    assert states["c-worker-1"]["state"] == "ALIVE" and states["c-worker-1"]["cores_used"] == 1
    assert states["c-worker-12"] == {"state": "absent"}


def test_log_commands_are_quoted_for_the_remote_shell_and_follow_when_asked() -> None:
    assert _log_command("cloud-init", lines=5, follow=False) == (
        "sudo sh -c 'tail -n 5 /var/log/cloud-init-output.log'"
    )
    assert "-F" in _log_command("spark", lines=0, follow=True)
    assert "-n +1" in _log_command("spark", lines=0, follow=False)
    hub = _log_command("hub", lines=10, follow=True)
    assert "journalctl -u sparkstack-hub -n 10 -f" in hub and "tail -n 10 -F" in hub
