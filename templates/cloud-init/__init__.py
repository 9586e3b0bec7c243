"""cloud-init templates, shipped as package data (``provisioner.cloud_init_templates``)."""
