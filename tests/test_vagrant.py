"""The Vagrantfile (one VM for the default experiment, or SDFL_VMS of them as a Ray cluster) is one
Vagrant accepts."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def vagrant():
    path = shutil.which("vagrant")
    if path is None:
        reason = "vagrant is not installed (scripts/install.sh installs Debian's package)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot validate the Vagrantfile under CI=true: {reason}")
        pytest.skip(reason)
    return path


@pytest.mark.parametrize("machines", ["1", "3"])
def test_vagrant_validates_the_vagrantfile_for_one_vm_and_for_a_cluster(vagrant, tmp_path, machines):
    # No VirtualBox or libvirt here: the provider blocks are left to `vagrant up`.
    done = subprocess.run([vagrant, "validate", "--ignore-provider"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "VAGRANT_HOME": str(tmp_path), "VAGRANT_CHECKPOINT_DISABLE": "1",
                               "SDFL_VMS": machines}, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout
    assert ("sdfl3:" in done.stdout) == (machines == "3")  # the cluster's machines, each validated


def test_vagrant_rejects_a_broken_vagrantfile(vagrant, tmp_path):
    """The check above is no formality: a misspelt setting fails it."""
    broken = (REPO / "Vagrantfile").read_text().replace("config.vm.boot_timeout", "config.vm.boot_timout")
    (tmp_path / "Vagrantfile").write_text(broken)
    done = subprocess.run([vagrant, "validate", "--ignore-provider"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "VAGRANT_HOME": str(tmp_path / "home"), "VAGRANT_CHECKPOINT_DISABLE": "1"},
                          timeout=120)
    assert done.returncode != 0 and "boot_timout" in done.stdout + done.stderr


def test_the_vm_is_provisioned_by_the_same_install_script():
    text = (REPO / "Vagrantfile").read_text()
    assert 'config.vm.box = "ubuntu/jammy64"' in text and "bash scripts/install.sh" in text
    assert "bash scripts/install.sh --cluster" in text and "sdfl_slot" in text  # the cluster's VMs join Ray
    assert 'cluster.servers="[\\"192.168.56.11\\"' in text  # and split one experiment over them
