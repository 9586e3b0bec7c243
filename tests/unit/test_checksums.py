"""The .sha512 files Apache publishes, read the way the provisioner reads them."""

from __future__ import annotations

import pytest

from provisioner.checksums import parse_sha512

TARBALL = "spark-4.3.0-bin-hadoop3.tgz"
DIGEST = "0123456789abcdef" * 8


def gpg_style(digest: str, name: str = TARBALL) -> str:
    groups = [digest.upper()[i : i + 8] for i in range(0, 128, 8)]
    pad = " " * (len(name) + 2)
    rows = [" ".join(groups[:6]), " ".join(groups[6:12]), " ".join(groups[12:])]
    return f"{name}: {rows[0]}\n{pad}{rows[1]}\n{pad}{rows[2]}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{DIGEST}  {TARBALL}\n", DIGEST),  # sha512sum, current releases
        (f"{DIGEST} *{TARBALL}\r\n", DIGEST),  # binary-mode marker, CRLF
        (f"{DIGEST.upper()}\n", DIGEST),  # the bare hash
        (gpg_style(DIGEST), DIGEST),  # GPG's layout, older releases
        (f"{DIGEST}  spark-4.3.0-bin-hadoop2.tgz\n", None),  # another tarball's hash
        (gpg_style(DIGEST, "spark-3.5.0-bin-hadoop3.tgz"), None),
        (f"{DIGEST[:-1]}  {TARBALL}\n", None),  # 127 digits
        ("<html>Not Found</html>\n", None),  # an error page served as 200
        ("", None),
    ],
)
def test_parse_sha512(text, expected):
    assert parse_sha512(text, tarball=TARBALL) == expected
