"""The test bed's OpenID Connect provider (tests/testbed/oidc) answers the authorization-code
flow the way the hub's oauthenticator 17 runs it: an authorization request with an S256
PKCE challenge, the provider's own login form (a wrong password gets the form again), its
consent form, the redirect back with the code and the same state, the code exchanged for
an opaque access token with the client secret (in a Basic header, or in the form as
oauthenticator sends it by default) and the code verifier, and the userinfo endpoint
answering that token with the account's preferred_username and groups.

Plain requests, as a script or the hub's HTTP client sees the pages: forms are found by
parsing the HTML, redirects back to the hub are captured, not followed (nothing listens
there)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from tests.testbed.oidc.provider import Provider, running

from .conftest import free_port, skip_or_fail

ADDRESS = "127.0.0.1"
CLIENT_ID, CLIENT_SECRET = "sparkstack-hub", "hub-secret-for-the-test"
REDIRECT_URI = "https://127.0.0.1:1/hub/oauth_callback"  # never reached: captured
SCOPE = "openid profile email groups"
ADA = {"preferred_username": "ada", "email": "ada@example.org", "groups": ["spark", "admins"]}
ACCOUNTS = {
    "ada": {"password": "correct horse", "claims": ADA},
    "bob": {"password": "battery staple", "claims": {"preferred_username": "bob", "groups": []}},
}


@dataclass
class IdP:
    provider: Provider
    discovery: dict[str, Any]

    def session(self) -> requests.Session:
        session = requests.Session()
        session.verify = str(self.provider.ca_file)
        # Else REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE, when set, win over session.verify
        # (psf/requests#3829) and the provider's CA is not trusted.
        # (Nor may a proxy from the environment stand between the test and 127.0.0.1.)
        session.trust_env = False
        return session


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdP]:
    if shutil.which("node") is None or shutil.which("npm") is None:
        skip_or_fail("node or npm is missing (apt-get install nodejs npm)")
    client = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
              "redirect_uris": [REDIRECT_URI]}  # fmt: skip
    with running(ip=ADDRESS, port=free_port(ADDRESS), client=client, accounts=ACCOUNTS,
                 workdir=tmp_path_factory.mktemp("oidc")) as provider:  # fmt: skip
        idp = IdP(provider, {})
        answer = idp.session().get(f"{provider.issuer}/.well-known/openid-configuration")
        answer.raise_for_status()
        idp.discovery = answer.json()
        yield idp
        assert provider.process.poll() is None, f"the provider died:\n{provider.log}"
    assert provider.process.returncode == 0, f"no clean exit on SIGTERM:\n{provider.log}"


@dataclass
class Form:
    action: str
    fields: dict[str, str] = field(default_factory=dict)  # named inputs and their values
    ids: set[str] = field(default_factory=set)  # ids of the form and the elements in it


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._open: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._open = Form(a.get("action", ""))
            self.forms.append(self._open)
        if self._open is None:
            return
        if "id" in a:
            self._open.ids.add(a["id"])
        if tag in ("input", "button", "select", "textarea") and a.get("name"):
            self._open.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def the_form(page: requests.Response) -> Form:
    parser = _FormParser()
    parser.feed(page.text)
    assert len(parser.forms) == 1, (
        f"{page.url} ({page.status_code}) has no single form:\n{page.text}"
    )
    return parser.forms[0]


def submit(session: requests.Session, page: requests.Response, **values: str) -> requests.Response:
    """Post the page's form with `values` over its own, following redirects on the provider
    but not the one back to the hub."""
    form = the_form(page)
    answer = session.post(urljoin(page.url, form.action), data={**form.fields, **values},
                          allow_redirects=False)  # fmt: skip
    return follow(session, answer)


def follow(session: requests.Session, answer: requests.Response) -> requests.Response:
    while answer.is_redirect and not back_to_hub(answer):
        answer = session.get(urljoin(answer.url, answer.headers["Location"]),
                             allow_redirects=False)  # fmt: skip
    return answer


def back_to_hub(answer: requests.Response) -> bool:
    return answer.is_redirect and answer.headers["Location"].startswith(REDIRECT_URI)


def callback_query(answer: requests.Response) -> dict[str, str]:
    assert back_to_hub(answer), f"{answer.status_code} from {answer.url}, not a redirect to the hub"
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    return {k: v[0] for k, v in query.items()}


def pkce() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), made as oauthenticator makes them."""
    verifier = secrets.token_urlsafe(32)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def authorize(idp: IdP, session: requests.Session, state: str,
              challenge: str | None) -> requests.Response:  # fmt: skip
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI,
              "scope": SCOPE, "state": state}  # fmt: skip
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    answer = session.get(idp.discovery["authorization_endpoint"], params=params,
                         allow_redirects=False)  # fmt: skip
    return follow(session, answer)


def exchange(idp: IdP, code: str, verifier: str, *, secret: str = CLIENT_SECRET,
             basic: bool = True) -> requests.Response:  # fmt: skip
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier}  # fmt: skip
    if not basic:
        data |= {"client_id": CLIENT_ID, "client_secret": secret}
    return idp.session().post(idp.discovery["token_endpoint"], data=data,
                              auth=(CLIENT_ID, secret) if basic else None)  # fmt: skip


def userinfo(idp: IdP, tokens: dict[str, Any]) -> dict[str, Any]:
    bearer = f"{tokens['token_type']} {tokens['access_token']}"
    answer = idp.session().get(idp.discovery["userinfo_endpoint"],
                               headers={"Authorization": bearer})  # fmt: skip
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_discovery_names_the_configured_issuer(idp: IdP) -> None:
    issuer = idp.provider.issuer
    assert idp.discovery["issuer"] == issuer == f"https://{ADDRESS}:{urlsplit(issuer).port}"
    for endpoint in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint"):
        assert idp.discovery[endpoint].startswith(f"{issuer}/")
    assert "groups" in idp.discovery["scopes_supported"]
    assert idp.discovery["code_challenge_methods_supported"] == ["S256"]


def test_the_code_flow_as_oauthenticator_runs_it(idp: IdP) -> None:
    session = idp.session()
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(16)

    login_page = authorize(idp, session, state, challenge)
    assert login_page.status_code == 200, login_page.text
    assert {"login", "password", "submit"} <= the_form(login_page).ids

    wrong = submit(session, login_page, login="ada", password="not the password")
    assert wrong.status_code == 401 and not wrong.is_redirect
    assert "Wrong user name or password" in wrong.text
    assert the_form(wrong).action == the_form(login_page).action  # the same form, again
    unknown = submit(session, wrong, login="nobody", password="correct horse")
    assert unknown.status_code == 401
    assert "_session" not in session.cookies  # the provider's login session: none yet

    consent_page = submit(session, unknown, login="ada", password="correct horse")
    assert consent_page.status_code == 200, consent_page.text
    assert "approve" in the_form(consent_page).ids
    assert "groups" in consent_page.text  # the scopes asked for are shown
    assert "_session" in session.cookies

    query = callback_query(submit(session, consent_page))
    assert query["state"] == state
    assert query["iss"] == idp.provider.issuer  # RFC 9207; oauthenticator ignores it

    refused = exchange(idp, query["code"], verifier, secret="not the secret")
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"

    answer = exchange(idp, query["code"], verifier)
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    assert tokens["token_type"] == "Bearer" and tokens["id_token"]
    assert tokens["access_token"].count(".") == 0  # opaque, for the userinfo endpoint
    assert userinfo(idp, tokens) == {"sub": "ada", **ADA}

    again = exchange(idp, query["code"], verifier)  # a code works once
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_a_second_sign_in_skips_the_pages_and_the_secret_may_come_in_the_form(idp: IdP) -> None:
    """oauthenticator 17's default (basic_auth False) puts the secret in the form; and the
    provider's session cookie signs the same browser in again without any page."""
    session = idp.session()
    state = secrets.token_urlsafe(16)
    verifier, challenge = pkce()
    consent_page = submit(session, authorize(idp, session, state, challenge),
                          login="bob", password="battery staple")  # fmt: skip
    submit(session, consent_page)  # the first code is left unused

    verifier, challenge = pkce()
    query = callback_query(authorize(idp, session, state, challenge))
    assert query["state"] == state
    answer = exchange(idp, query["code"], verifier, basic=False)
    assert answer.status_code == 200, answer.text
    assert userinfo(idp, answer.json()) == {"sub": "bob", "preferred_username": "bob",
                                            "groups": []}  # fmt: skip


def test_pkce_is_required(idp: IdP) -> None:
    query = callback_query(authorize(idp, idp.session(), "s", challenge=None))
    assert query["error"] == "invalid_request" and "PKCE" in query["error_description"]
    assert query["state"] == "s"


def test_a_wrong_code_verifier_is_refused(idp: IdP) -> None:
    session = idp.session()
    _, challenge = pkce()
    consent_page = submit(session, authorize(idp, session, "s", challenge),
                          login="ada", password="correct horse")  # fmt: skip
    query = callback_query(submit(session, consent_page))
    refused = exchange(idp, query["code"], pkce()[0])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
