"""inventory.py: what a user with a wrong inventory reads, key by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner import inventory as I
from provisioner.errors import InventoryError
from tests.unit.inventory_cases import EXAMPLE, example_data, sso_changes, with_changes


def problems(data: dict) -> list[str]:
    """The problem lines of the InventoryError for ``data`` (none if it validates)."""
    try:
        I.parse_inventory(data, source="inv.toml")
    except InventoryError as exc:
        assert exc.exit_code == 2
        assert exc.resource == "inv.toml"
        head, *lines = exc.message.splitlines()
        assert head == "inventory is not valid:"
        return [line.strip() for line in lines]
    return []


BAD = [
    ({"workers.count": -2}, (), ["workers.count: must be >= 0, got -2"]),
    ({"workers.cuont": 3}, (), ["workers.cuont: unknown key (did you mean 'count'?)"]),
    ({"workers.count": "2"}, (), ['workers.count: must be an integer, got string "2"']),
    ({"workers.count": True}, (), ["workers.count: must be an integer, got boolean true"]),
    ({"workers.count": 2.0}, (), ["workers.count: must be an integer, got float 2.0"]),
    (
        {"workers.anti_affinity": "strict"},
        (),
        ["workers.anti_affinity: must be one of 'soft', 'hard' or 'none', got \"strict\""],
    ),
    ({"workers": 3}, (), ["workers: must be a table, got integer 3"]),
    ({}, ("master",), ["master: required key is missing"]),
    ({}, ("cluster.name",), ["cluster.name: required key is missing"]),
    ({"cluster.image": " "}, (), ["cluster.image: must not be empty"]),
    (
        {"clustr": {}},
        (),
        ["clustr: unknown key (did you mean 'cluster'?)"],
    ),
    (
        {"extra": 1},
        (),
        ["extra: unknown key (allowed: cluster, network, ssh, master, workers, spark, "
         "jupyterhub, mirrors)"],
    ),
    *(
        (
            {"cluster.name": bad},
            (),
            [
                "cluster.name: must be 1-40 characters of lowercase letters, digits and '-', "
                f"start with a letter and not end with '-', got \"{bad}\""
            ],
        )
        for bad in ("Spark", "1spark", "spark-", "spark_demo", "a" * 41, "", "spark demo")
    ),
    (
        {"cluster.max_parallel_creates": 0},
        (),
        ["cluster.max_parallel_creates: must be >= 1, got 0"],
    ),
    (
        {"network.allowed_cidrs": ["10.0.0.1/24", "10.0.0.0/33", "any"]},
        (),
        [
            'network.allowed_cidrs[0]: host bits set in "10.0.0.1/24" '
            '(did you mean "10.0.0.0/24"?)',
            'network.allowed_cidrs[1]: not a CIDR like "203.0.113.0/24": "10.0.0.0/33"',
            'network.allowed_cidrs[2]: not a CIDR like "203.0.113.0/24": "any"',
        ],
    ),
    (
        {"network.allowed_cidrs": "0.0.0.0/0"},
        (),
        ['network.allowed_cidrs: must be an array, got string "0.0.0.0/0"'],
    ),
    ({"network.floating_ip": "1.2.3"}, (), ['network.floating_ip: not an IP address: "1.2.3"']),
    ({"ssh.user": "Debian"}, (), ['ssh.user: not a valid Unix user name: "Debian"']),
    (
        {"ssh.keypair": "mine"},
        (),
        [
            "ssh.private_key: must be set when ssh.keypair is set (the private key of that "
            "keypair, for SSH)"
        ],
    ),
    (
        {"spark.version": "4.3"},
        (),
        ['spark.version: must be a release number like "4.3.0", got "4.3"'],
    ),
    (
        {"spark.version": "3.2.4"},
        (),
        [
            "spark.version: must be 3.3.0 or newer (older releases publish no -bin-hadoop3 "
            'tarball), got "3.2.4"'
        ],
    ),
    (
        {"spark.mirror": "ftp://mirror/spark"},
        (),
        [
            'spark.mirror: must be an http:// or https:// URL without query, got "ftp://mirror/spark"'
        ],
    ),
    (
        {"spark.mirror": "https://bob:secret@mirror.internal/spark"},
        (),
        [
            "spark.mirror: must not carry a user name or password: it would be readable by "
            "every process on the nodes (user_data); allow the nodes by address instead"
        ],
    ),
    (
        {"spark.sha512": "abc"},
        (),
        ["spark.sha512: must be 128 hexadecimal digits (a sha512), got 3 characters"],
    ),
    (
        {"spark.sha512": "g" * 128},
        (),
        ["spark.sha512: must be 128 hexadecimal digits (a sha512), got 128 characters"],
    ),
    # A plain-http mirror: anyone on the way can swap the tarball, so its hash must not
    # come over plain http too (nothing pinned: the mirror's own, or an http source).
    (
        {"spark.mirror": "http://mirror.internal/spark", "spark.trust_mirror_checksum": True},
        (),
        [
            'spark.mirror: "http://mirror.internal/spark" is plain http: anyone on the way can '
            "replace the tarball, so its hash must not come over http too: pin spark.sha512, "
            "or fetch it over https (only https:// in spark.checksums, "
            "spark.trust_mirror_checksum = false)"
        ],
    ),
    (
        {
            "spark.mirror": "http://mirror.internal/spark",
            "spark.checksums": ["https://downloads.apache.org/spark", "http://sums.internal/"],
        },
        (),
        [
            'spark.mirror: "http://mirror.internal/spark" is plain http: anyone on the way can '
            "replace the tarball, so its hash must not come over http too: pin spark.sha512, "
            "or fetch it over https (only https:// in spark.checksums, "
            "spark.trust_mirror_checksum = false)"
        ],
    ),
    (
        {
            "spark.mirror": "https://mirror.internal/spark",
            "spark.checksums": ["https://mirror.internal/spark/"],
        },
        (),
        [
            'spark.checksums: lists spark.mirror ("https://mirror.internal/spark") itself: a '
            "mirror cannot vouch for its own tarball; use Apache's site, or set "
            "spark.trust_mirror_checksum = true if that is really what you want"
        ],
    ),
    (
        {"spark.checksums": []},
        (),
        ["spark.checksums: is empty: list where the .sha512 comes from, or pin spark.sha512"],
    ),
    (
        {"spark.checksums": ["https://ok.example/spark", "ftp://sums/spark"]},
        (),
        [
            'spark.checksums[1]: must be an http:// or https:// URL without query, got "ftp://sums/spark"'
        ],
    ),
    (
        {"spark.sha512": "ab" * 64, "spark.trust_mirror_checksum": True},
        (),
        ["spark.trust_mirror_checksum: has no effect when spark.sha512 is pinned; remove one"],
    ),
    (
        {"spark.trust_mirror_checksum": "yes"},
        (),
        ['spark.trust_mirror_checksum: must be true or false, got string "yes"'],
    ),
    (
        {"spark.limits.executor_memory": "2 GB", "spark.limits.driver_memory": "100m"},
        (),
        [
            'spark.limits.executor_memory: must be a size like "2g" or "512m", got "2 GB"',
            'spark.limits.driver_memory: must be at least 450m (Spark\'s minimum), got "100m"',
        ],
    ),
    (
        {"spark.limits.cores_max": 1},
        (),
        [
            "spark.limits.cores_max: must be >= spark.limits.executor_cores (2), got 1: no "
            "executor would ever start"
        ],
    ),
    ({"spark.limits.executor_cores": 0}, (), ["spark.limits.executor_cores: must be >= 1, got 0"]),
    (
        {"spark.limits.default_cores": 2**70, "spark.limits.executor_memory": "17t"},
        (),
        [
            f"spark.limits.default_cores: must be <= 4096, got {2**70}",
            'spark.limits.executor_memory: must be at most 16t, got "17t"',
        ],
    ),
    (
        {"jupyterhub.users": ["alice", "Bob", "root", "alice", "x" * 33]},
        (),
        [
            "jupyterhub.users[1]: not a valid Unix user name (lowercase letter first, then a-z "
            '0-9 _ -, at most 32): "Bob"',
            'jupyterhub.users[2]: "root" is a system account name; pick another',
            'jupyterhub.users[3]: "alice" is listed twice',
            "jupyterhub.users[4]: not a valid Unix user name (lowercase letter first, then a-z "
            f'0-9 _ -, at most 32): "{"x" * 33}"',
        ],
    ),
    (
        {"jupyterhub.admins": ["alice", "carol"]},
        (),
        ['jupyterhub.admins: "carol" is not in jupyterhub.users'],
    ),
    (
        {"ssh.user": "alice"},
        (),
        ['jupyterhub.users: "alice" is ssh.user (it has sudo); hub users must be other accounts'],
    ),
    (
        {"jupyterhub.authenticator": "ldap"},
        (),
        ["jupyterhub.authenticator: must be one of 'pam' or 'oidc', got \"ldap\""],
    ),
    ({"jupyterhub.port": 0}, (), ["jupyterhub.port: must be >= 1, got 0"]),
    ({"jupyterhub.port": 65536}, (), ["jupyterhub.port: must be <= 65535, got 65536"]),
    (
        {"jupyterhub.port": 8081},
        (),
        ["jupyterhub.port: 8081 is used by the Spark worker web UI; pick another (443 is usual)"],
    ),
    (
        {"jupyterhub.port": 40007},
        (),
        ["jupyterhub.port: 40007 is used by Spark drivers; pick another (443 is usual)"],
    ),
    (
        {"jupyterhub.tls.mode": "acme"},
        (),
        [
            'jupyterhub.tls.domain: must be set when jupyterhub.tls.mode = "acme"',
            'jupyterhub.tls.email: must be set when jupyterhub.tls.mode = "acme"',
        ],
    ),
    (
        {"jupyterhub.tls.mode": "files", "jupyterhub.tls.cert_file": "/nonexistent/cert.pem"},
        (),
        [
            'jupyterhub.tls.key_file: must be set when jupyterhub.tls.mode = "files"',
            "jupyterhub.tls.cert_file: no such file: /nonexistent/cert.pem",
        ],
    ),
    (
        {"jupyterhub.tls.domain": "hub.example.org"},
        (),
        [
            'jupyterhub.tls.domain: only used when jupyterhub.tls.mode = "acme" (mode is '
            '"self-signed"); remove it or change mode'
        ],
    ),
    (
        {
            "jupyterhub.tls.mode": "acme",
            "jupyterhub.tls.domain": "hub",
            "jupyterhub.tls.email": "me",
        },
        (),
        [
            'jupyterhub.tls.domain: not a DNS name like "spark.example.org": "hub"',
            'jupyterhub.tls.email: not an e-mail address: "me"',
        ],
    ),
    (
        {
            "jupyterhub.tls.mode": "acme",
            "jupyterhub.tls.domain": "hub.example.org",
            "jupyterhub.tls.email": "me@example.org",
            "jupyterhub.port": 80,
        },
        (),
        [
            "jupyterhub.port: 80 is needed for the ACME challenge when jupyterhub.tls.mode = "
            '"acme"; use 443'
        ],
    ),
    (
        {
            "jupyterhub.tls.acme_directory": "https://acme.example.org/directory",
            "jupyterhub.tls.acme_ca_file": "/etc/hostname",
        },
        (),
        [
            'jupyterhub.tls.acme_directory: only used when jupyterhub.tls.mode = "acme" (mode '
            'is "self-signed"); remove it or change mode',
            'jupyterhub.tls.acme_ca_file: only used when jupyterhub.tls.mode = "acme" (mode '
            'is "self-signed"); remove it or change mode',
        ],
    ),
    (
        {
            "jupyterhub.tls.mode": "acme",
            "jupyterhub.tls.domain": "hub.example.org",
            "jupyterhub.tls.email": "me@example.org",
            "jupyterhub.tls.acme_directory": "http://acme.example.org/directory",
        },
        (),
        [
            "jupyterhub.tls.acme_directory: must be an https:// URL, got "
            '"http://acme.example.org/directory"',
        ],
    ),
    (
        {
            "jupyterhub.tls.mode": "acme",
            "jupyterhub.tls.domain": "hub.example.org",
            "jupyterhub.tls.email": "me@example.org",
            "jupyterhub.tls.acme_ca_file": "/nonexistent/ca.pem",
        },
        (),
        ["jupyterhub.tls.acme_ca_file: no such file: /nonexistent/ca.pem"],
    ),
    (
        {"jupyterhub.tls.acme_ca_file": 3},
        (),
        ["jupyterhub.tls.acme_ca_file: must be a string (a file path), got integer 3"],
    ),
    (
        {"jupyterhub.tls.cert_file": 3},
        (),
        ["jupyterhub.tls.cert_file: must be a string (a file path), got integer 3"],
    ),
    (
        {"jupyterhub.culling.kernel_idle_timeout": -1},
        (),
        ["jupyterhub.culling.kernel_idle_timeout: must be >= 0, got -1"],
    ),
    (
        {"jupyterhub.culling.server_idle_timout": 5},
        (),
        [
            "jupyterhub.culling.server_idle_timout: unknown key (did you mean "
            "'server_idle_timeout'?)"
        ],
    ),
    # Every problem of the file at once, not one per run.
    (
        {"workers.count": -1, "spark.limits.driver_memory": "lots", "ssh.usr": "x"},
        ("network.name",),
        [
            "network.name: required key is missing",
            "ssh.usr: unknown key (did you mean 'user'?)",
            "workers.count: must be >= 0, got -1",
            'spark.limits.driver_memory: must be a size like "2g" or "512m", got "lots"',
        ],
    ),
]


@pytest.mark.parametrize(("changes", "drop", "expected"), BAD, ids=lambda v: str(v)[:60])
def test_bad_inventory_names_every_problem_by_key(changes, drop, expected):
    assert problems(with_changes(changes, drop=drop)) == expected


def test_example_inventory_validates_with_documented_defaults():
    inv = I.load_inventory(EXAMPLE)
    assert inv.cluster.name == "spark-demo"
    assert inv.cluster.cloud is None  # "" in the TOML means "not set"
    assert inv.network.floating_ip is None
    assert inv.ssh.keypair is None and inv.ssh.private_key is None
    assert inv.spark.sha512 is None
    assert inv.spark.version.startswith("4.")
    assert inv.jupyterhub.port == 443
    assert inv.workers.count == 2


@pytest.mark.parametrize(
    "changes",
    [
        # pinned: the mirror's transport no longer matters
        {"spark.mirror": "http://mirror.internal/spark", "spark.sha512": "ab" * 64},
        # the hash comes over https from Apache's site (the default checksums)
        {"spark.mirror": "http://mirror.internal/spark"},
        # an https mirror the user trusts with its own .sha512
        {"spark.mirror": "https://mirror.internal/spark", "spark.trust_mirror_checksum": True},
    ],
)
def test_a_mirror_is_accepted_when_its_hash_comes_from_elsewhere(changes):
    inv = I.parse_inventory(with_changes(changes), source="t")
    assert inv.spark.mirror == changes["spark.mirror"]


def test_checksums_default_to_apaches_download_area_then_its_archive():
    inv = I.load_inventory(EXAMPLE)
    assert inv.spark.checksum_urls() == [
        "https://downloads.apache.org/spark/spark-4.3.0/spark-4.3.0-bin-hadoop3.tgz.sha512",
        "https://archive.apache.org/dist/spark/spark-4.3.0/spark-4.3.0-bin-hadoop3.tgz.sha512",
    ]
    assert inv.spark.trust_mirror_checksum is False


def test_omitted_optional_tables_take_the_defaults_the_example_documents():
    data = example_data()
    minimal = {
        "cluster": {"name": "c", "image": data["cluster"]["image"]},
        "network": {"name": "private"},
        "master": {"flavor": "m1.large"},
        "workers": {"flavor": "m1.medium"},
    }
    inv = I.parse_inventory(minimal, source="min.toml")
    full = I.parse_inventory(data, source="example")
    for table in ("spark", "ssh"):
        assert getattr(inv, table) == getattr(full, table)
    assert inv.jupyterhub.tls == full.jupyterhub.tls
    assert inv.jupyterhub.culling == full.jupyterhub.culling
    assert inv.network.allowed_cidrs == []  # nobody, until the user says who
    assert inv.cluster.max_parallel_creates == full.cluster.max_parallel_creates


def test_values_are_normalised():
    inv = I.parse_inventory(
        with_changes(
            {
                "network.allowed_cidrs": ["10.1.0.0/16", " 10.1.0.0/16", "2001:db8::/32"],
                "spark.mirror": "https://archive.apache.org/dist/spark/",
                "spark.sha512": "AB" * 64,
                "spark.limits.executor_memory": "4G",
            }
        ),
        source="x",
    )
    # Neutron answers 409 to a duplicate security group rule: each range once.
    assert inv.network.allowed_cidrs == ["10.1.0.0/16", "2001:db8::/32"]
    assert inv.spark.mirror == "https://archive.apache.org/dist/spark"
    assert inv.spark.tarball_url() == (
        "https://archive.apache.org/dist/spark/spark-4.3.0/spark-4.3.0-bin-hadoop3.tgz"
    )
    assert inv.spark.sha512 == "ab" * 64
    assert inv.spark.limits.executor_memory == "4g"
    assert I.memory_mib("4g") == 4096


def test_relative_paths_are_relative_to_the_inventory_file(tmp_path: Path):
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "hub.crt").write_text("cert")
    (tmp_path / "tls" / "hub.key").write_text("key")
    text = (
        EXAMPLE.read_text()
        .replace(
            'mode = "self-signed"\ncert_file = ""\nkey_file = ""',
            'mode = "files"\ncert_file = "tls/hub.crt"\nkey_file = "tls/hub.key"',
        )
        .replace('private_key = ""', 'private_key = "~/.ssh/id_ed25519"')
    )
    assert 'mode = "files"' in text
    path = tmp_path / "inventory.toml"
    path.write_text(text)
    inv = I.load_inventory(path)
    assert inv.jupyterhub.tls.cert_file == tmp_path / "tls" / "hub.crt"
    assert inv.jupyterhub.tls.key_file == tmp_path / "tls" / "hub.key"
    assert inv.ssh.private_key == Path("~/.ssh/id_ed25519").expanduser()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[cluster]\nname = "x"\nimage = \n', "invalid TOML at line 3, column 9: Invalid value"),
        (
            "[cluster\n",
            "invalid TOML at line 1, column 9: Expected ']' at the end of a table declaration",
        ),
        ("[a]\nx = 1\n[a]\n", "invalid TOML at line 3, column 3: Cannot declare ('a',) twice"),
    ],
)
def test_toml_syntax_errors_give_line_and_column(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "inventory.toml"
    path.write_text(text)
    with pytest.raises(InventoryError) as err:
        I.load_inventory(path)
    assert err.value.message == expected
    assert err.value.resource == str(path)


def test_unreadable_inputs_are_inventory_errors(tmp_path: Path):
    with pytest.raises(InventoryError, match="no such file") as err:
        I.load_inventory(tmp_path / "missing.toml")
    assert "inventory.example.toml" in (err.value.hint or "")
    with pytest.raises(InventoryError, match="is a directory"):
        I.load_inventory(tmp_path)
    (tmp_path / "latin1.toml").write_bytes(b'[cluster]\nname = "caf\xe9"\n')
    with pytest.raises(InventoryError, match=r"not UTF-8 text \(invalid byte on line 2\)"):
        I.load_inventory(tmp_path / "latin1.toml")


def test_derived_names_are_the_ones_cloud_code_uses():
    inv = I.load_inventory(EXAMPLE)
    assert inv.keypair_name() == "sparkstack-spark-demo"
    assert inv.keypair_is_generated()
    assert inv.security_group_name() == "sparkstack-spark-demo"
    assert inv.server_group_name() == "sparkstack-spark-demo-workers"
    assert inv.master_name() == "spark-demo-master"
    assert inv.worker_names() == ["spark-demo-worker-1", "spark-demo-worker-2"]
    assert inv.tag() == "sparkstack:spark-demo"
    assert I.worker_index("spark-demo-worker-12", "spark-demo") == 12
    assert I.worker_index("spark-demo-worker-0", "spark-demo") is None
    assert I.worker_index("spark-demo-worker-1", "spark") is None
    assert I.worker_index("spark-demo-master", "spark-demo") is None
    with pytest.raises(ValueError):
        I.worker_server_name("c", 0)
    given = I.parse_inventory(
        with_changes({"ssh.keypair": "team-key", "ssh.private_key": "/keys/team"}), source="x"
    )
    assert given.keypair_name() == "team-key" and not given.keypair_is_generated()


def test_longest_cluster_name_fits_nova_tags_and_hostnames():
    name = "a" * 40
    inv = I.parse_inventory(with_changes({"cluster.name": name}), source="x")
    assert len(inv.tag()) <= 60  # Nova's tag limit
    assert len(inv.worker_name(9999)) <= 63  # a DNS label / hostname


def test_example_shows_every_key_the_model_knows():
    """inventory.example.toml is the documentation: no key may be missing from it."""

    def walk(model: type, data: dict, prefix: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if name not in data:
                missing.append(prefix + name)
            elif isinstance(field.annotation, type) and issubclass(field.annotation, I.BaseModel):
                missing += walk(field.annotation, data[name], f"{prefix}{name}.")
        return missing

    assert walk(I.Inventory, example_data(), "") == []


def test_single_sign_on_is_checked_key_by_key(tmp_path: Path):
    secret = tmp_path / "client-secret"
    secret.write_text("s3cret-from-the-provider\n")
    (tmp_path / "empty").write_text("\n")
    sso = sso_changes(secret)
    inv = I.parse_inventory(with_changes(sso), source="x")
    oidc = inv.jupyterhub.oidc
    assert (inv.jupyterhub.authenticator, oidc.issuer, oidc.client_secret_file) == (
        "oidc", "https://login.example.org/realms/research", secret)
    assert oidc.client_secret() == "s3cret-from-the-provider"
    assert "s3cret" not in repr(inv), "the secret is read when needed, never kept"
    assert oidc.scopes == ["openid", "profile", "email"]
    assert oidc.username_claim == "preferred_username"

    # everything the provider needs, named by key, all at once
    assert problems(with_changes({"jupyterhub.authenticator": "oidc"})) == [
        f'jupyterhub.oidc.{key}: must be set when jupyterhub.authenticator = "oidc"'
        for key in ("issuer", "client_id", "client_secret_file")]
    assert problems(with_changes({**sso,
                                  "jupyterhub.oidc.issuer": "http://login.example.org",
                                  "jupyterhub.oidc.client_secret_file": str(tmp_path / "nope"),
                                  "jupyterhub.oidc.scopes": ["profile", "profile"],
                                  "jupyterhub.oidc.username_claim": "user name"})) == [
        "jupyterhub.oidc.issuer: must be the provider's https:// issuer URL, without user "
        'name, query or fragment, got "http://login.example.org"',
        f"jupyterhub.oidc.client_secret_file: no such file: {tmp_path / 'nope'}",
        'jupyterhub.oidc.username_claim: must be one claim name like "preferred_username", '
        'got "user name"',
        'jupyterhub.oidc.scopes[1]: "profile" is listed twice',
    ]
    assert problems(with_changes({**sso, "jupyterhub.oidc.scopes": ["profile"],
                                  "jupyterhub.oidc.client_secret_file": str(tmp_path / "empty"),
                                  "jupyterhub.oidc.issuer": "https://u:p@login.example.org"})
                    ) == [
        "jupyterhub.oidc.issuer: must be the provider's https:// issuer URL, without user "
        'name, query or fragment, got "https://u:p@login.example.org"',
        f"jupyterhub.oidc.client_secret_file: {tmp_path / 'empty'} is empty",
        'jupyterhub.oidc.scopes: lacks "openid": without it the provider gives no userinfo',
    ]
    # nobody could log in: no names, no groups
    assert problems(with_changes({**sso, "jupyterhub.users": [], "jupyterhub.admins": [],
                                  "jupyterhub.oidc.allowed_groups": [],
                                  "jupyterhub.oidc.admin_groups": []})) == [
        "jupyterhub.oidc.allowed_groups: is empty and so is jupyterhub.users: nobody could "
        "log in; list the provider's groups or user names"]
    # with PAM the table must stay empty, as the example has it
    assert problems(with_changes({"jupyterhub.oidc.issuer": "https://login.example.org",
                                  "jupyterhub.oidc.admin_groups": ["x"]})) == [
        f'jupyterhub.oidc.{key}: only used when jupyterhub.authenticator = "oidc" (it is '
        '"pam"); empty it or change authenticator' for key in ("issuer", "admin_groups")]
