"""sparkstack: an OpenStack project to a Spark cluster with JupyterHub, in one command."""

__version__ = "0.1.0"
