#!/usr/bin/env bash
# Set up a fresh Debian 12 / Ubuntu 22.04-24.04 machine for sdfl-testbed. Idempotent: a second
# run installs nothing and changes nothing. Re-runs itself with sudo when not root.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install.sh: needs root (no sudo found)" >&2; exit 1; }
  exec sudo --preserve-env=CI bash "$0" "$@"
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
say() { echo "[install] $*"; }

# 1. System packages (only the missing ones, so a second run never touches apt).
# vagrant: the test suite validates the Vagrantfile; tshark reads the runs' --pcap captures.
packages=(mininet openvswitch-switch iperf3 tcpdump tshark iputils-ping ethtool iproute2 python3-venv vagrant)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "apt packages: all present"
fi

# 2. Open vSwitch daemons (no systemd needed: ovs-ctl works in containers and CI too).
if ovs-vsctl --timeout=5 show >/dev/null 2>&1; then
  say "Open vSwitch: running"
else
  say "Open vSwitch: starting"
  /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null
  ovs-vsctl --timeout=10 show >/dev/null
fi

# 3. The venv sees Debian's Mininet through --system-site-packages.
if [ ! -x .venv/bin/python ]; then
  say "venv: creating .venv"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi

# 4. Python packages, re-installed only when setup.py changed.
stamp=.venv/.sdfl-setup.sha256
wanted=$(sha256sum setup.py | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || ! .venv/bin/python -c "import sdfl, torch, os_ken, river" 2>/dev/null; then
  say "pip: installing (torch CPU 2.13.0, os-ken<4, river, scapy, numpy, scipy, matplotlib, psutil, pytest)"
  # PyPI's Linux torch is the CUDA build (GBs): without a configured wheel source (this
  # project's build machines have one), take the CPU build from PyTorch's own index.
  torch_index=()
  pip_config=$(.venv/bin/pip config list 2>/dev/null || true)  # not piped into grep -q: pipefail
  grep -qE "index-url|find-links" <<<"$pip_config" || torch_index=(--index-url https://download.pytorch.org/whl/cpu)
  .venv/bin/pip install --quiet --disable-pip-version-check "${torch_index[@]}" torch==2.13.0
  .venv/bin/pip install --quiet --disable-pip-version-check -e .
  echo "$wanted" > "$stamp"
else
  say "pip: up to date"
fi

# 5. A sudo user keeps ownership of the files created in their checkout.
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
  chown -R "$SUDO_USER": .venv ./*.egg-info 2>/dev/null || true
fi
say "done: .venv/bin/sdfl check"
