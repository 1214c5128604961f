"""Suite-wide fixtures live in tests/fixtures/, one module per kind of real thing the tests start."""

pytest_plugins = [
    "tests.fixtures.models",  # tiny local models built with save_pretrained (runtime)
    "tests.fixtures.services",  # real PostgreSQL and Redis servers on loopback
    "tests.fixtures.kube",  # the simulated Kubernetes cluster (kube-apiserver + kwok)
    "tests.fixtures.browser",  # Debian's chromium through Playwright (dashboard tests)
]
