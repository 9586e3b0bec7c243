"""A real OpenID Connect provider (npm oidc-provider) for the hub's single sign-on tests."""
