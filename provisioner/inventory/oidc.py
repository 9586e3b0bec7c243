"""jupyterhub.oidc: single sign-on through the team's OpenID Connect provider."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from provisioner.inventory.fields import (
    KeyProblems,
    OptionalStr,
    Table,
    file_problem,
    not_empty,
    path_value,
    show,
)

# An OIDC issuer is an https URL without query or fragment (OpenID Connect Discovery 1.0).
ISSUER_RE = re.compile(r"https://[^\s/?#]+(/[^\s?#]*)?")

# The OAuth 2.0 scopes a provider needs to give the hub a user name (OIDC's standard ones).
OIDC_SCOPES = ("openid", "profile", "email")
# A claim or group name: one word, as providers spell them (Keycloak, Entra, Dex, Authentik).
CLAIM_RE = re.compile(r"[A-Za-z0-9_.:/@-]{1,128}")
GROUP_RE = re.compile(r"[^\s,]{1,256}")


class OidcConfig(Table):
    """jupyterhub.oidc: single sign-on through an OpenID Connect provider."""

    # Needed with authenticator = "oidc", empty otherwise (as in the example).
    # The provider's issuer URL: its discovery document is <issuer>/.well-known/...
    issuer: OptionalStr = None
    client_id: OptionalStr = None
    # A local file holding the client's secret: sent to the master over SSH, never in
    # user_data or the inventory itself.
    client_secret_file: Path | None = None
    # The userinfo claim whose value becomes the hub and Unix user name.
    username_claim: str = "preferred_username"
    scopes: list[str] = Field(default_factory=lambda: list(OIDC_SCOPES))
    # The userinfo claim listing the user's groups, for allowed_groups and admin_groups.
    groups_claim: str = "groups"
    allowed_groups: list[str] = Field(default_factory=list)
    admin_groups: list[str] = Field(default_factory=list)
    # The login page's button says "Sign in with <login_service>".
    login_service: str = "single sign-on"
    # A CA bundle the master trusts for the provider's HTTPS: only for a private CA.
    ca_file: Path | None = None

    @field_validator("client_secret_file", "ca_file", mode="before")
    @classmethod
    def _paths(cls, value: Any, info: ValidationInfo) -> Any:
        return path_value(value, info)

    @field_validator("issuer")
    @classmethod
    def _check_issuer(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip()
        if not ISSUER_RE.fullmatch(text) or "@" in text.split("/")[2]:
            raise ValueError(
                "must be the provider's https:// issuer URL, without user name, query or "
                f"fragment, got {show(value)}"
            )
        return text

    @field_validator("login_service")
    @classmethod
    def _check_text(cls, value: str) -> str:
        return not_empty(value)

    @field_validator("username_claim", "groups_claim")
    @classmethod
    def _check_claim(cls, value: str) -> str:
        if not CLAIM_RE.fullmatch(value):
            raise ValueError(f'must be one claim name like "preferred_username", got {show(value)}')
        return value

    @field_validator("scopes", "allowed_groups", "admin_groups")
    @classmethod
    def _check_words(cls, value: list[str], info: ValidationInfo) -> list[str]:
        problems: list[tuple[str | int, str]] = []
        for index, word in enumerate(value):
            if not GROUP_RE.fullmatch(word):
                problems.append((index, f"must be one word without spaces, got {show(word)}"))
            elif word in value[:index]:
                problems.append((index, f"{show(word)} is listed twice"))
        if problems:
            raise KeyProblems(problems)
        if info.field_name == "scopes" and "openid" not in value:
            raise ValueError('lacks "openid": without it the provider gives no userinfo')
        return value

    @field_validator("client_secret_file", "ca_file")
    @classmethod
    def _usable(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if problem := file_problem(path):
            raise ValueError(problem)
        if info.field_name == "client_secret_file" and path is not None and not _secret(path):
            raise ValueError(f"{path} is empty")
        return path

    def client_secret(self) -> str:
        """The secret, read from its file now: never kept in the inventory's model."""
        assert self.client_secret_file is not None, "only with authenticator = oidc"
        return _secret(self.client_secret_file)

    def problems(self, authenticator: str) -> list[tuple[str | int, str]]:
        """What the authenticator needs and lacks, or sets and does not use."""
        required = ("issuer", "client_id", "client_secret_file")
        if authenticator == "oidc":
            return [(key, 'must be set when jupyterhub.authenticator = "oidc"')
                    for key in required if getattr(self, key) is None]
        unused = OidcConfig()
        return [(key, 'only used when jupyterhub.authenticator = "oidc" (it is '
                      f'"{authenticator}"); empty it or change authenticator')
                for key in type(self).model_fields
                if getattr(self, key) != getattr(unused, key)]


def _secret(path: Path) -> str:
    return path.read_text(errors="replace").strip()
