#!/usr/bin/env bash
# Installs every Debian package fablab needs, and only the ones that are missing.
# Idempotent: a second run installs nothing and takes well under a second.
# Must run as root (CI does); as a normal user it re-executes itself with sudo.
set -euo pipefail

# Debian package -> why fablab needs it.
PACKAGES=(
  tshark        # decodes fablab's pcaps in tests (RoCEv2 dissector)
  clang         # compiles the eBPF programs under ebpf/ (-target bpf)
  llvm          # llvm-strip / llvm-objdump for the eBPF objects
  libbpf-dev    # bpf_helpers.h and friends for the eBPF programs
  libelf-dev    # ELF handling for eBPF tooling
  bpftool       # inspects the XDP switch's maps and programs (docs/ebpf.md)
  pkg-config    # locates C libraries for build scripts
  iproute2      # ip netns / ip link for the network-namespace testbeds
  ethtool       # offload settings on veth (GRO for XDP_REDIRECT peers)
  iputils-ping  # ping across the emulated fabric in netns tests
  iperf3        # TCP transfers across the emulated fabric in netns tests
  python3-scapy # an independent RoCEv2 ICRC implementation the wire tests compare with
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} Debian packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -E "$0" "$@"
  fi
  echo "setup: missing packages (${missing[*]}) and not root; run: sudo scripts/setup.sh" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer no without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
