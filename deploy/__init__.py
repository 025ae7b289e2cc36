"""Deployment files generated from the spec: Zero to JupyterHub values and a DockerSpawner config."""
