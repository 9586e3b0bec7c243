"""`sparkstack render` as a user runs it: output, exit codes, and never a traceback."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from provisioner import checksums
from provisioner.cli import main
from provisioner.inventory import load_inventory
from provisioner.render import render_cloud_init
from tests.unit.inventory_cases import EXAMPLE, PINNED_SHA512, pinned_example


@pytest.fixture
def pinned(tmp_path: Path) -> Path:
    """The example inventory with its Spark hash pinned: no checksum source is asked."""
    return pinned_example(tmp_path / "example.toml")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_master_cloud_config_goes_to_stdout(capsys, pinned):
    code, out, err = run(capsys, "render", "-i", str(pinned), "--role", "master")
    assert code == 0, err
    assert out == render_cloud_init(load_inventory(pinned), role="master")
    assert err == "spark tarball sha512: pinned in the inventory (spark.sha512)\n"
    assert out.startswith("#cloud-config\n")


def test_output_file_holds_the_worker_document(capsys, tmp_path: Path):
    target = tmp_path / "out" / "worker.yaml"
    target.parent.mkdir()
    inv_path = pinned_example(tmp_path / "example.toml")
    code, out, err = run(
        capsys, "render", "-i", str(inv_path), "--role", "worker",
        "--master-ip", "10.0.0.7", "-o", str(target),
    )  # fmt: skip
    assert code == 0, err
    assert out == ""
    assert f"wrote {target}" in err
    assert target.read_text() == render_cloud_init(
        load_inventory(inv_path), role="worker", master_ip="10.0.0.7"
    )
    assert [p.name for p in target.parent.iterdir()] == ["worker.yaml"]  # no temp file left


def test_kernel_role_writes_kernel_json(capsys, pinned):
    code, out, err = run(
        capsys, "render", "-i", str(pinned), "--role", "kernel", "--master-ip", "10.0.0.7",
        "--py4j-zip", "/opt/spark/python/lib/py4j-0.10.9.7-src.zip",
    )  # fmt: skip
    assert code == 0, err
    env = json.loads(out)["env"]
    assert env["PYTHONPATH"].endswith(":/opt/spark/python/lib/py4j-0.10.9.7-src.zip")
    assert env["PYSPARK_SUBMIT_ARGS"].startswith("--master spark://10.0.0.7:7077 ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "worker"], "--master-ip is required for --role worker"),
        (["--role", "kernel"], "--master-ip is required for --role kernel"),
        (["--role", "worker", "--master-ip", "10.0.0"], "not an IPv4 address: '10.0.0'"),
        (["--role", "master", "--py4j-zip", "/x.zip"], "--py4j-zip is only used with"),
        (["--role", "image", "--master-ip", "10.0.0.7"], "--master-ip is not used with"),
        (["--role", "master", "--tree", "/tmp/never"], "--tree is only used with --role image"),
    ],
)
def test_missing_or_bad_options_exit_2_with_a_message(capsys, pinned, args, message):
    code, out, err = run(capsys, "render", "-i", str(pinned), *args)
    assert code == 2
    assert out == ""
    assert message in " ".join(err.split())
    assert "Traceback" not in err


def test_image_role_as_a_tree_and_as_gzip(capsys, pinned, tmp_path: Path):
    import gzip
    import os

    code, _, err = run(capsys, "render", "-i", str(pinned), "--role", "image",
                       "--tree", str(tmp_path / "tree"))  # fmt: skip
    assert code == 0, err
    boot = tmp_path / "tree" / "usr/local/sbin/sparkstack-bootstrap"
    assert os.stat(boot).st_mode & 0o777 == 0o755
    assert "steps: mirrors base harden user java proxy python spark baked" in boot.read_text()
    lock = tmp_path / "tree" / "etc/sparkstack/locks/requirements.txt"
    assert lock.read_text() == (Path(__file__).parents[2] / "image/requirements.txt").read_text()
    # as plain text the builder's document is over Nova's limit: .gz writes it compressed
    code, _, err = run(capsys, "render", "-i", str(pinned), "--role", "image",
                       "-o", str(tmp_path / "builder.yaml.gz"))  # fmt: skip
    assert code == 0, err
    text = gzip.decompress((tmp_path / "builder.yaml.gz").read_bytes()).decode()
    assert text.startswith("#cloud-config\n# sparkstack: builder of an image")


def test_missing_inventory_exits_2(capsys, tmp_path: Path):
    code, _, err = run(capsys, "render", "-i", str(tmp_path / "nope.toml"), "--role", "master")
    assert code == 2
    assert "no such file" in err and "Traceback" not in err


def test_unwritable_output_exits_2(capsys, tmp_path: Path, pinned):
    target = tmp_path / "missing-dir" / "out.yaml"
    code, _, err = run(capsys, "render", "-i", str(pinned), "--role", "master", "-o", str(target))
    assert code == 2
    assert "cannot write" in err and "Traceback" not in err


# --- Fuzzing: whatever the file holds, the answer is a document or a message, never a trace.

# Pinned, so a mutation that leaves the inventory valid renders without a checksum source.
_EXAMPLE_LINES = (
    EXAMPLE.read_text().replace('\nsha512 = ""\n', f'\nsha512 = "{PINNED_SHA512}"\n').splitlines()
)

toml_values = st.recursive(
    st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(
            lambda f: (
                "nan"
                if f != f
                else ("inf" if f > 0 else "-inf")
                if abs(f) == float("inf")
                else repr(f)
            )
        ),
        st.booleans().map(lambda b: "true" if b else "false"),
        st.text(max_size=50).map(json.dumps),
        st.sampled_from(
            [
                "1979-05-27",
                "07:32:00",
                "1979-05-27T07:32:00Z",
                '""',
                "''",
                '"0.0.0.0/0"',
                '"4g"',
                '"  "',
                '"~/x"',
                '"/dev/null"',
                '"."',
                '"a" "b"',
                "[",
                "{",
                "=",
            ]
        ),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), inner, max_size=3).map(
            lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}"
        ),
    ),
    max_leaves=6,
)


@st.composite
def mutated_examples(draw) -> bytes:
    """The example inventory with a few lines replaced, dropped, renamed or garbled."""
    lines = list(_EXAMPLE_LINES)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(lines) - 1))
        line = lines[index]
        action = draw(st.sampled_from(["value"] * 4 + ["drop", "rename", "garble", "table"]))
        if action == "value" and "=" in line and not line.startswith("#"):
            lines[index] = line.split("=", 1)[0] + "= " + draw(toml_values)
        elif action == "drop":
            del lines[index]
        elif action == "rename" and "=" in line:
            key = draw(st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True))
            lines[index] = key + " =" + line.split("=", 1)[1]
        elif action == "garble":
            lines.insert(index, draw(st.text(max_size=30)))
        else:
            name = draw(st.from_regex(r"[a-z.]{1,20}", fullmatch=True))
            lines.insert(index, f"[{name}]")
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    content=st.one_of(
        mutated_examples(),
        st.binary(max_size=200),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    ),
    role=st.sampled_from(["master", "worker", "kernel"]),
)
@example(content=b"", role="master")
@example(content=b"[" * 2000, role="master")
@example(content=b"a = [" * 1000, role="worker")
@example(content=b"\xff\xfe\x00", role="kernel")
def test_render_of_any_input_file_prints_its_output_or_one_error_never_a_traceback(
    capsys, monkeypatch, content: bytes, role: str
):
    # A mutation that drops the pin would send render to Apache's site: this test is about
    # the input, so the network answers like an unreachable one, here and nowhere else.
    def no_network(url: str, *, timeout: float) -> str:
        raise OSError("no network in this test")

    monkeypatch.setattr(checksums, "fetch_text", no_network)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inventory.toml"
        path.write_bytes(content)
        code, out, err = run(
            capsys, "render", "-i", str(path), "--role", role, "--master-ip", "10.1.2.3"
        )
    assert "Traceback" not in out + err
    if code == 0:
        assert out.startswith("{" if role == "kernel" else "#cloud-config\n")
    else:
        assert code == 2, err
        assert err.startswith("error: ") and len(err.strip()) > len("error: ")
