"""Jupyter kernel templates, shipped as package data (``provisioner.kernels``)."""
