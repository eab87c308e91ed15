"""Fixtures shared by every test package live in tests/fixtures/, one module per thing run."""

pytest_plugins = [
    "tests.fixtures.images",
    "tests.fixtures.registry",
    "tests.fixtures.nats",
    "tests.fixtures.distribution",
    "tests.fixtures.s3",
    "tests.fixtures.notifier",
    "tests.fixtures.docker",
    "tests.fixtures.netns",
]
