"""The node image recipe. A package only so that its lock files (requirements.txt and the
npm lock) ship inside sparkstack: a master on a stock image installs exactly what they pin,
and they reach it in its user_data."""
