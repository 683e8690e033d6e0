#!/bin/bash
# GCE startup script (instance metadata "startup-script"; the guest agent runs it on every boot).
#
# Google's Debian images do not ship cloud-init, so on the first boot this installs it from
# Debian's archive and runs its stages once against the instance's "user-data" metadata (the GCE
# datasource). Later boots, and images that have cloud-init, do nothing here: cloud-init's own
# units run and it keeps its once-per-instance record. Nothing secret passes through this script.
set -euo pipefail

if command -v cloud-init >/dev/null 2>&1; then
  exit 0
fi

# Only the GCE datasource; leave the network configuration to the guest environment.
install -d -m 0755 /etc/cloud/cloud.cfg.d
cat > /etc/cloud/cloud.cfg.d/90-nexusd-gce.cfg <<'CFG'
datasource_list: [GCE]
network: {config: disabled}
CFG

export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends cloud-init

cloud-init init
cloud-init modules --mode=config
cloud-init modules --mode=final
