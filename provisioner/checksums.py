"""The Spark tarball's sha512 from a source that is not the mirror.

The edge that fetches it: the only code here that speaks plain HTTP(S) (urllib, a timeout
per request, small answers). A pinned hash (``spark.sha512``) or a mirror trusted with its
own ``.sha512`` (``spark.trust_mirror_checksum``) needs no fetch. Otherwise each
``spark.checksums`` source is asked for the release's ``.sha512`` in turn (Apache's download
area keeps current releases only, its archive every release) and the first well-formed
answer for this very tarball wins. The hash then travels in the nodes' user data, so every
node compares what the mirror sent with a hash the mirror did not choose.
"""

from __future__ import annotations

import logging
import re
import ssl
import urllib.error
import urllib.request

from provisioner.errors import UserInputError
from provisioner.inventory.services import SparkConfig
from provisioner.render import SparkHash

log = logging.getLogger(__name__)

# A .sha512 file is one line (or three, in the older layout); anything bigger is not one.
_MAX_BYTES = 16 * 1024
_HEX_RE = re.compile(r"^[0-9a-f]{128}$")


def parse_sha512(text: str, *, tarball: str) -> str | None:
    """The hash in a ``.sha512`` file for ``tarball``, lower case; None if it holds none.

    Two layouts exist: ``sha512sum`` output (``<hex>  <file>``) for current releases, and
    GPG's (``<file>: <hex in upper-case groups of 8 over several lines>``) for older ones.
    A file naming another tarball is not this tarball's hash.
    """
    text = text.replace("\r", "").strip()
    name, sep, rest = text.partition(":")
    if sep and not _HEX_RE.match(name.strip().lower()):
        named, digits = name.strip(), rest
    else:
        first, _, named = text.partition(" ")
        digits, named = first, named.strip().lstrip("*")
    digest = "".join(digits.split()).lower()
    if not _HEX_RE.match(digest) or (named and named != tarball):
        return None
    return digest


def fetch_text(url: str, *, timeout: float) -> str:
    """The body of a small text file at ``url``. Raises OSError (HTTPError, URLError,
    timeouts) or ValueError (too big, not text)."""
    request = urllib.request.Request(url, headers={"User-Agent": "sparkstack"})
    # A fresh default context: the system's CAs (or SSL_CERT_FILE), hostnames checked.
    context = ssl.create_default_context() if url.startswith("https://") else None
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        body: bytes = response.read(_MAX_BYTES + 1)
    if len(body) > _MAX_BYTES:
        raise ValueError(f"more than {_MAX_BYTES} bytes: not a .sha512 file")
    return body.decode("ascii")


def _reason(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, UnicodeDecodeError):
        return "not a text file"
    return str(exc) or type(exc).__name__


def spark_hash(spark: SparkConfig, *, timeout: float = 15.0) -> SparkHash:
    """What every node checks the tarball against: pinned, the mirror's own, or fetched
    here from ``spark.checksums``. Raises UserInputError naming the keys to change when
    no source answers."""
    known = SparkHash.of_inventory(spark)
    if known is not None:
        return known
    tarball = spark.tarball_name()
    reasons = []
    for url in spark.checksum_urls():
        try:
            digest = parse_sha512(fetch_text(url, timeout=timeout), tarball=tarball)
        except (OSError, ValueError) as exc:
            reasons.append(f"{url}: {_reason(exc)}")
            log.info("no sha512 from %s: %s", url, _reason(exc))
            continue
        if digest is None:
            reasons.append(f"{url}: no sha512 of {tarball} in it")
            continue
        log.info("sha512 of %s fetched from %s", tarball, url)
        return SparkHash(sha512=digest, source=f"fetched by sparkstack from {url}")
    urls = spark.checksum_urls()
    raise UserInputError(
        f"spark.checksums: could not fetch the sha512 of {tarball} ({'; '.join(reasons)}). "
        f'Pin it in the inventory instead: spark.sha512 = "<128 hex digits>", from '
        f"{urls[0] if urls else 'the .sha512 Apache publishes'} read on a machine that "
        "can reach it, or list a source you can reach in spark.checksums",
        step="spark checksum",
    )
