"""Shared pytest fixtures.

Lab fixtures (real traffic in network namespaces; tests using them must carry
``@pytest.mark.lab``):

* ``nat_lab``          - one NatLab with started servers; parametrize indirectly:
  ``@pytest.mark.parametrize("nat_lab", [{"real_servers": 3, "clients": 2}], indirect=True)``
* ``nat_lab_3x3``      - one NatLab per module (3 real servers, 3 clients, servers started)
* ``nat_lab_factory``  - ``make(real_servers=1, clients=1, start_servers=True, **kw)``
  builds as many labs as a test needs; all are torn down after the test.

Teardown is guaranteed: the fixtures tear down in ``finally``, each NatLab also
registers an atexit hook, and labs left by a killed earlier run (owner process gone)
are removed at session start (``cleanup_stale``).  Without root, lab tests are skipped.
"""

from __future__ import annotations

import os
import shutil

import pytest

LAB_SKIP = None
if os.geteuid() != 0:
    LAB_SKIP = "lab tests need root (network namespaces, veth, bridges)"
elif shutil.which("ip") is None:
    LAB_SKIP = "lab tests need iproute2 (`ip`)"


def pytest_collection_modifyitems(config, items):
    if LAB_SKIP is None:
        return
    skip = pytest.mark.skip(reason=LAB_SKIP)
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def lab_env():
    """Session guard for lab tests: skip without root, reap stale labs once."""
    if LAB_SKIP:
        pytest.skip(LAB_SKIP)
    from pyvs.engine.lab import cleanup_stale

    cleanup_stale()
    yield


@pytest.fixture
def nat_lab_factory(lab_env):
    from pyvs.engine.lab import NatLab

    labs: list = []

    def make(real_servers: int = 1, clients: int = 1, start_servers: bool = True, **kw):
        lab = NatLab(real_servers=real_servers, clients=clients,
                     start_servers=start_servers, **kw)
        labs.append(lab)
        lab.up()  # cleans up after itself if it fails
        return lab

    try:
        yield make
    finally:
        errors = []
        for lab in reversed(labs):
            try:
                lab.down()
            except Exception as e:  # noqa: BLE001 - tear every lab down
                errors.append(f"{lab.name}: {e}")
        if errors:
            pytest.fail("lab teardown: " + "; ".join(errors))


@pytest.fixture(scope="module")
def nat_lab_3x3(lab_env):
    """One NatLab per test module: 3 real servers, 3 clients, servers started."""
    from pyvs.engine.lab import NatLab

    lab = NatLab(real_servers=3, clients=3, start_servers=True)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture
def nat_lab(request, nat_lab_factory):
    """A running NatLab (default 1 real server, 1 client, servers started)."""
    params = dict(getattr(request, "param", None) or {})
    return nat_lab_factory(**params)
