#!/usr/bin/env bash
# Set up a fresh Debian 12 / Ubuntu 22.04-24.04 machine for sdfl-testbed. Idempotent: a second
# run installs nothing and changes nothing. Re-runs itself with sudo when not root.
#
#   --ryu       also .venv-ryu: Ryu 4.34 on Python 3.9, for network.controller = "ryu"
#   --os-ken-4  also .venv-osken4: os-ken 4.x on Python 3.12, for network.controller_python
#   --cluster   also Ray in .venv (pip's .[cluster] extra), for sdfl sweep --ray; and this machine as
#               a second cluster "server" for runs split over servers (cluster.servers): openssh-server
#               and sudo, sshd with PermitTunnel (Mininet's ssh tunnels), root's key authorized for
#               itself and 127.0.0.1 in its known hosts (changes this machine's sshd: test machines)
# (pins and why: controllers/requirements.txt)
set -euo pipefail

controller_venvs=()
cluster=0
for arg in "$@"; do
  case "$arg" in
    --ryu) controller_venvs+=("ryu:3.9 3.8:.venv-ryu") ;;
    --os-ken-4) controller_venvs+=("os_ken:3.12 3.13:.venv-osken4") ;;
    --cluster) cluster=1 ;;
    *) echo "install.sh: unknown option '$arg' (known: --ryu, --os-ken-4, --cluster)" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install.sh: needs root (no sudo found)" >&2; exit 1; }
  exec sudo --preserve-env=CI bash "$0" "$@"
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
say() { echo "[install] $*"; }

# 1. System packages (only the missing ones, so a second run never touches apt).
apt_install() {  # label, packages...
  local label=$1 pkg missing=()
  shift
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "$label: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "$label: all present"
  fi
}
# vagrant: the test suite validates the Vagrantfile; tshark reads the runs' --pcap captures.
apt_install "apt packages" mininet openvswitch-switch iperf3 tcpdump tshark iputils-ping ethtool iproute2 \
  python3-venv vagrant

# 2. Open vSwitch daemons (no systemd needed: ovs-ctl works in containers and CI too).
if ovs-vsctl --timeout=5 show >/dev/null 2>&1; then
  say "Open vSwitch: running"
else
  say "Open vSwitch: starting"
  # Its userspace datapath sends through one packet socket sized by this default as it opens it:
  # bursts beyond the kernel's 212,992 bytes were lost, mirrored copies for good (topologies.builder).
  { echo 16777216 > /proc/sys/net/core/wmem_default; } 2>/dev/null \
    || say "could not raise net.core.wmem_default (sdfl check tells what it costs)"
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
if [ "$cluster" = 1 ]; then
  if .venv/bin/python -c "import ray" 2>/dev/null; then
    say "Ray: present"
  else
    say "Ray: installing (the .[cluster] extra)"
    .venv/bin/pip install --quiet --disable-pip-version-check -e ".[cluster]"
  fi
  apt_install "apt packages (cluster)" openssh-server openssh-client sudo
  root_home=$(getent passwd root | cut -d: -f6)  # the runs ssh as root, whoever ran sudo
  mkdir -p /etc/ssh/sshd_config.d /run/sshd "$root_home/.ssh" && chmod 700 "$root_home/.ssh"
  printf '%s\n' "PermitRootLogin prohibit-password" "PermitTunnel ethernet" "UseDNS no" "MaxStartups 100:30:200" \
    > /etc/ssh/sshd_config.d/sdfl-cluster.conf
  [ -f "$root_home/.ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$root_home/.ssh/id_ed25519"
  grep -qxF "$(cat "$root_home/.ssh/id_ed25519.pub")" "$root_home/.ssh/authorized_keys" 2>/dev/null \
    || cat "$root_home/.ssh/id_ed25519.pub" >> "$root_home/.ssh/authorized_keys"
  chmod 600 "$root_home/.ssh/authorized_keys"
  if pgrep -x sshd >/dev/null; then
    kill -HUP "$(pgrep -xo sshd)"  # re-reads its configuration
  else
    /usr/sbin/sshd
  fi
  for attempt in 1 2 3 4 5 6 7 8 9 10; do  # a re-executing sshd listens again within a moment
    ssh-keygen -F 127.0.0.1 >/dev/null 2>&1 \
      || ssh-keyscan -t ed25519 127.0.0.1 >> "$root_home/.ssh/known_hosts" 2>/dev/null \
      || true
    ssh -o BatchMode=yes -o ConnectTimeout=5 root@127.0.0.1 true 2>/dev/null && break
    [ "$attempt" = 10 ] && { echo "install.sh: ssh root@127.0.0.1 fails after setting up sshd" >&2; exit 1; }
    sleep 0.5
  done
  say "sshd: this machine reaches itself over ssh (a second cluster server)"
fi

# 5. Controller venvs: a Python of a version asked for, from PATH, pyenv or the system (apt
# where it has one: Ubuntu 20.04's python3.9, or the deadsnakes PPA's), with the framework,
# numpy, river and this repository on its path.
find_python() {  # the first working python$V with venv, for V in the versions given
  local version candidate
  for version in "$@"; do
    for candidate in "$(command -v "python$version" || true)" \
        "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/"$version".*/bin/"python$version" \
        /usr/bin/"python$version" /usr/local/bin/"python$version"; do
      [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c "import ensurepip, venv" 2>/dev/null \
        && { echo "$candidate"; return 0; }
    done
  done
  for version in "$@"; do
    if apt-cache policy "python$version-venv" 2>/dev/null | grep -q "Candidate: [0-9]"; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "python$version" "python$version-venv" >/dev/null && { echo "/usr/bin/python$version"; return 0; }
    fi
  done
  return 1
}
for spec in ${controller_venvs[@]+"${controller_venvs[@]}"}; do
  IFS=: read -r module versions venv <<<"$spec"
  stamp="$venv/.sdfl-requirements.sha256"
  wanted=$(sha256sum controllers/requirements.txt | cut -d" " -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ] && "$venv/bin/python" -c "import $module, numpy, river" 2>/dev/null; then
    say "$venv: up to date"
    continue
  fi
  # shellcheck disable=SC2086  # the versions are words
  python=$(find_python $versions) || {
    echo "install.sh: $venv needs Python ${versions// / or } with venv; none found (PATH, pyenv, /usr/bin, apt)." >&2
    echo "  Ubuntu 22.04/24.04: add-apt-repository ppa:deadsnakes/ppa, then run this again" >&2
    echo "  anywhere: pyenv install ${versions%% *}" >&2
    exit 1
  }
  say "$venv: $module on $python"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "setuptools<80"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r controllers/requirements.txt
  "$venv/bin/python" -c "import site, sys; open(site.getsitepackages()[0] + '/sdfl-testbed.pth', 'w').write(sys.argv[1] + '\\n')" "$repo"
  "$venv/bin/python" -c "import $module, controllers.domain_app" 2>/dev/null \
    || { echo "install.sh: $venv cannot import the controller app" >&2; exit 1; }
  echo "$wanted" > "$stamp"
done

# 6. A sudo user keeps ownership of the files created in their checkout.
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
  chown -R "$SUDO_USER": .venv .venv-ryu .venv-osken4 ./*.egg-info 2>/dev/null || true
fi
say "done: .venv/bin/sdfl check"
