"""The container tests' fixtures: the real Docker engine, Compose v2 and the built image."""

from tests.kit.docker_engine import docker_compose, docker_engine, planelink_image

__all__ = ["docker_compose", "docker_engine", "planelink_image"]
