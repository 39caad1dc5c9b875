"""Fixtures of the integration tests that need docker."""

import shutil

import pytest

from tests.conftest import IN_CI
from tests.docker_support import build_images, remove_containers, sh


@pytest.fixture(scope="session")
def images(docker):
    built = build_images()
    yield built
    remove_containers()


@pytest.fixture(scope="session")
def compose():
    if not (shutil.which("docker-compose") or sh("docker", "compose", "version", check=False).returncode == 0):
        if IN_CI:
            pytest.fail("docker compose is required for SageMaker local mode in CI")
        pytest.skip("no docker compose here (apt-get install docker-compose)")


