#!/usr/bin/env bash
# nexusd-provision: turn a fresh Debian 12 VM into the Dev-Nexus database host.
#
# Installed as /usr/local/sbin/nexusd-provision by cloud-init (user-data.yaml.tftpl), which runs
# it once per instance; scripts/rehearse-vm runs the same file in a debootstrap chroot. Every step
# checks before it acts, so running it again is harmless and is the way to apply a rotated secret
# or a new binary (edit /etc/nexusd/provision.env, then `sudo nexusd-provision`):
#
#   packages   PostgreSQL 15 + pgvector (PGDG apt repository, or Debian + pgvector built from
#              Debian trixie's source package), jq; optionally the Google Cloud Ops Agent
#   configure  nexusd system user, swap file, data disk (formatted only when blank, fstab with
#              nofail), the cluster's data directory on it, postgresql.conf for 1 GB, pg_hba,
#              role + database + extensions (password from Secret Manager), the nexusd binary
#              (SHA-256 checked), /etc/nexusd/nexusd.env, the nexusd unit, a /health check
#
# usage: nexusd-provision [all|packages|configure]   (default: all)
#
# Settings: /etc/nexusd/provision.env (NEXUSD_PROVISION_ENV), KEY='value' lines written by
# cloud-init; the defaults below describe the VM. Nothing here is secret: secrets are read from
# Secret Manager at run time, kept in shell variables, never printed, never put on a command line.
set -euo pipefail
shopt -s inherit_errexit
umask 022

phase=${1:-all}
case "$phase" in
  all|packages|configure) ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  *) echo "nexusd-provision: unknown phase '$phase' (all, packages or configure)" >&2; exit 2 ;;
esac

settings_file=${NEXUSD_PROVISION_ENV:-/etc/nexusd/provision.env}
if [ -f "$settings_file" ]; then
  # shellcheck source=/dev/null
  . "$settings_file"
fi

: "${PG_MAJOR:=15}"
# pgdg: apt.postgresql.org (the VM). debian: bookworm's postgresql-15 and pgvector built from
# Debian trixie's source package (the rehearsal, where apt.postgresql.org is unreachable).
: "${PG_SOURCE:=pgdg}"
: "${PGVECTOR_VERSION:=0.8.0}"
# The GCE data disk (attached with device_name nexusd-data). Set but empty: no data disk, the
# data directory lives on the boot disk under DATA_MOUNT.
: "${DATA_DEVICE=/dev/disk/by-id/google-nexusd-data}"
: "${DATA_MOUNT:=/mnt/pgdata}"
: "${PG_PORT:=5432}"
# The VM's static internal IP is added by terraform so the connector range can reach 5432 when
# the firewall allows it; loopback is always there.
: "${PG_LISTEN_ADDRESSES:=localhost}"
# The VPC connector range: the only network the app role may connect from (besides loopback).
: "${PG_APP_CIDR:=}"
: "${DB_NAME:=devnexus}"
: "${DB_USER:=devnexus}"
# Secret Manager: project and secret ids. The rehearsal sets SECRETS_DIR instead, where a file
# named after each secret id holds its value.
: "${GCP_PROJECT:=}"
: "${SECRET_POSTGRES_PASSWORD:=nexusd-postgres-password}"
: "${SECRET_GITHUB_TOKEN:=}"
: "${SECRET_OPENAI_API_KEY:=}"
: "${SECRET_NEXUSD_API_TOKENS:=}"
: "${SECRETS_DIR:=}"
# gs://bucket/object (read with the VM's service account), https://…, file:///… or a path.
: "${NEXUSD_BINARY_URL:=}"
: "${NEXUSD_BINARY_SHA256:=}"
: "${NEXUSD_SETTINGS:=/etc/nexusd/settings.env}"
: "${NEXUSD_HEALTH_URL:=http://127.0.0.1:8080/health}"
: "${OPS_AGENT:=false}"
: "${OPS_AGENT_CONFIG:=/usr/local/share/nexusd/ops-agent-config.yaml}"
# A swap file on the boot disk, so a burst does not OOM-kill PostgreSQL on a 1 GB VM. 0: none.
: "${SWAP_MB:=1024}"
# false: configure everything but leave starting nexusd to the caller (the rehearsal).
: "${START_SERVICE:=true}"

export DEBIAN_FRONTEND=noninteractive
pgdata="$DATA_MOUNT/postgresql/$PG_MAJOR/main"
pgconf="/etc/postgresql/$PG_MAJOR/main"
state_dir=/var/lib/nexusd-provision

log() { printf 'nexusd-provision: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
have_systemd() { [ -d /run/systemd/system ]; }
os_codename() { sed -n 's/^VERSION_CODENAME=//p' /etc/os-release; }

# Moves file $1 to $2 unless $2 already has that content; mode $3, owner $4. Sets changed=1
# when it replaced something, so callers know to restart. (Results travel in variables, not exit
# codes: a function called as `f && …` would run with errexit off.)
changed=0
install_if_changed() {
  local src=$1 dst=$2 mode=$3 owner=$4
  if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
    rm -f "$src"
    chmod "$mode" "$dst"
    chown "$owner" "$dst"
  else
    chmod "$mode" "$src"
    chown "$owner" "$src"
    mv -f "$src" "$dst"
    changed=1
  fi
}

valid() { # valid NAME VALUE REGEX: settings end up in config files, so reject anything odd
  [[ "$2" =~ $3 ]] || die "$1='$2' is not valid (expected $3); fix $settings_file"
}

# --- packages -------------------------------------------------------------------------------

apt_updated=0
apt_update() {
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt_updated=1
}
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$apt_updated" -eq 1 ] || apt_update
  log "installing ${missing[*]}"
  # Lock timeout: on a first boot unattended-upgrades may hold the dpkg lock for a while.
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# add_apt_repo NAME KEY_URL KEY_FINGERPRINT URI SUITE: a deb822 source signed by a key in
# /etc/apt/keyrings (no apt-key), the key checked against its published fingerprint when one is
# given (otherwise only HTTPS vouches for it, as with Google's own installer).
add_apt_repo() {
  local name=$1 key_url=$2 fingerprint=$3 uri=$4 suite=$5
  local list="/etc/apt/sources.list.d/$name.sources" key tmp fpr
  [ -f "$list" ] && return 0
  apt_install ca-certificates curl gpg
  install -d -m 0755 /etc/apt/keyrings
  tmp=$(mktemp)
  curl -fsSL --proto '=https' --retry 5 --retry-connrefused -o "$tmp" "$key_url"
  if [ -n "$fingerprint" ]; then
    fpr=$(gpg --show-keys --with-colons "$tmp" 2>/dev/null | awk -F: '$1 == "fpr" { print $10 }')
    grep -qx "$fingerprint" <<<"$fpr" || die "$key_url: key fingerprint is not $fingerprint"
  fi
  # apt reads armored keys only from *.asc, binary ones from *.gpg.
  if grep -q 'BEGIN PGP PUBLIC KEY BLOCK' "$tmp"; then key="/etc/apt/keyrings/$name.asc"; else key="/etc/apt/keyrings/$name.gpg"; fi
  install -m 0644 "$tmp" "$key"
  rm -f "$tmp"
  cat > "$list" <<EOF
Types: deb
URIs: $uri
Suites: $suite
Components: main
Signed-By: $key
EOF
  apt_updated=0
}

install_postgresql() {
  # No cluster from the package's postinst: the cluster is created on the data disk below, or
  # an existing one there is adopted (a replaced VM).
  install -d -m 0755 /etc/postgresql-common/createcluster.d
  cat > /etc/postgresql-common/createcluster.d/50-nexusd.conf <<'EOF'
# Written by nexusd-provision: the cluster lives on the data disk and is created there.
create_main_cluster = false
EOF
  local codename
  codename=$(os_codename)
  case "$PG_SOURCE" in
    pgdg)
      add_apt_repo pgdg https://www.postgresql.org/media/keys/ACCC4CF8.asc \
        B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8 https://apt.postgresql.org/pub/repos/apt "$codename-pgdg"
      apt_install "postgresql-$PG_MAJOR" "postgresql-$PG_MAJOR-pgvector"
      ;;
    debian)
      apt_install "postgresql-$PG_MAJOR" postgresql-contrib
      build_pgvector_from_debian_source
      ;;
    *) die "PG_SOURCE='$PG_SOURCE' is not valid (expected pgdg or debian)" ;;
  esac
}

# Debian 12 has no pgvector package: build Debian trixie's source package against PG 15, as
# scripts/setup-debian does on development machines.
build_pgvector_from_debian_source() {
  local sharedir pg_config="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" have="" work
  apt_install build-essential dpkg-dev "postgresql-server-dev-$PG_MAJOR"
  sharedir=$("$pg_config" --sharedir)
  if [ -f "$sharedir/extension/vector.control" ]; then
    have=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$sharedir/extension/vector.control")
  fi
  [ "$have" = "$PGVECTOR_VERSION" ] && return 0
  log "building pgvector $PGVECTOR_VERSION from Debian's source package"
  if [ ! -f /etc/apt/sources.list.d/nexusd-trixie-src.sources ]; then
    cat > /etc/apt/sources.list.d/nexusd-trixie-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  apt_update
  work=$(mktemp -d)
  chmod 755 "$work"
  # apt downloads as _apt when it can write there (and warns otherwise).
  if getent passwd _apt >/dev/null; then chown _apt "$work"; fi
  (
    cd "$work"
    apt-get source -qq --download-only "pgvector=$PGVECTOR_VERSION-*" >/dev/null 2>&1 \
      || apt-get source -qq --download-only pgvector >/dev/null
    dpkg-source -x --no-check ./*.dsc src >/dev/null
    cd src
    make -s PG_CONFIG="$pg_config" OPTFLAGS="" >/dev/null
    make -s PG_CONFIG="$pg_config" install >/dev/null
  )
  rm -rf "$work"
}

install_ops_agent() {
  [ "$OPS_AGENT" = true ] || return 0
  local codename
  codename=$(os_codename)
  # Google rotates the keys in this file, so no fingerprint is pinned: HTTPS vouches for it.
  add_apt_repo google-cloud-ops-agent https://packages.cloud.google.com/apt/doc/apt-key.gpg \
    "" https://packages.cloud.google.com/apt "google-cloud-ops-agent-$codename-all"
  apt_install google-cloud-ops-agent
}

packages() {
  apt_install ca-certificates curl jq util-linux e2fsprogs
  install_postgresql
  install_ops_agent
  log "packages ready: $(/usr/lib/postgresql/"$PG_MAJOR"/bin/postgres --version)"
}

# --- configure ------------------------------------------------------------------------------

# cloud-init's users: creates it on the VM; the rehearsal relies on this.
create_system_user() {
  getent group nexusd >/dev/null || groupadd --system nexusd
  if ! getent passwd nexusd >/dev/null; then
    log "creating system user nexusd"
    useradd --system --gid nexusd --home-dir /var/lib/nexusd --no-create-home \
      --shell /usr/sbin/nologin --comment "nexusd daemon" nexusd
  fi
}

setup_swap() {
  [ "$SWAP_MB" -gt 0 ] || return 0
  [ -f /swapfile ] || {
    log "creating a ${SWAP_MB} MB swap file"
    fallocate -l "${SWAP_MB}M" /swapfile.new
    chmod 600 /swapfile.new
    mkswap /swapfile.new >/dev/null
    mv /swapfile.new /swapfile
  }
  grep -q '^/swapfile ' /etc/fstab || echo '/swapfile none swap sw 0 0' >> /etc/fstab
  swapon --show=NAME --noheadings | grep -qx /swapfile || swapon /swapfile
  # Swap only under real pressure; PostgreSQL's shared buffers should stay in RAM.
  echo 'vm.swappiness = 10' > /etc/sysctl.d/60-nexusd-swap.conf
  sysctl -q -p /etc/sysctl.d/60-nexusd-swap.conf || true
}

setup_data_disk() {
  if [ -z "$DATA_DEVICE" ]; then
    install -d -m 0755 "$DATA_MOUNT"
    return 0
  fi
  for _ in $(seq 1 60); do [ -b "$DATA_DEVICE" ] && break; sleep 1; done
  [ -b "$DATA_DEVICE" ] || die "data disk $DATA_DEVICE not found: is the disk attached with device_name nexusd-data?"

  # Format only a blank disk. blkid -p exits 2 when it finds no filesystem and no partition
  # table; any other failure stops here rather than risk formatting a disk with data.
  local rc=0
  blkid -p "$DATA_DEVICE" >/dev/null 2>&1 || rc=$?
  case $rc in
    0) ;;
    2) log "formatting blank data disk $DATA_DEVICE (ext4)"
       mkfs.ext4 -q -m 0 -L pgdata -E lazy_itable_init=0,lazy_journal_init=0,discard "$DATA_DEVICE" ;;
    *) die "blkid -p $DATA_DEVICE failed (exit $rc): not touching the disk" ;;
  esac

  install -d -m 0755 "$DATA_MOUNT"
  # nofail: a missing disk must not drop the VM into emergency mode (PostgreSQL then fails to
  # start on its own, since its unit requires the mount, and the alerts fire).
  if ! awk -v m="$DATA_MOUNT" '$2 == m { found = 1 } END { exit !found }' /etc/fstab; then
    echo "$DATA_DEVICE $DATA_MOUNT ext4 defaults,nofail,noatime,discard 0 2" >> /etc/fstab
    have_systemd && systemctl daemon-reload
  fi
  mountpoint -q "$DATA_MOUNT" || mount "$DATA_MOUNT"
  # The disk may have been grown in terraform since: take the new space (online, no-op otherwise).
  resize2fs "$DATA_DEVICE" >/dev/null 2>&1 || true
}

setup_cluster() {
  if [ -f "$pgconf/postgresql.conf" ]; then
    return 0
  fi
  install -d -m 0755 "$DATA_MOUNT/postgresql"
  if [ -f "$pgdata/PG_VERSION" ]; then
    # The data disk of a previous VM: adopt its cluster. The postgres uid may differ on the new
    # boot disk, and pg_createcluster wants the configuration files in the data directory.
    log "adopting the existing cluster in $pgdata"
    chown -R postgres:postgres "$DATA_MOUNT/postgresql"
    local f
    for f in postgresql.conf pg_hba.conf pg_ident.conf; do
      [ -f "$pgdata/$f" ] || install -m 0600 -o postgres -g postgres \
        "/usr/share/postgresql/$PG_MAJOR/$f.sample" "$pgdata/$f"
    done
    pg_createcluster "$PG_MAJOR" main -d "$pgdata" >/dev/null
  else
    log "creating the cluster in $pgdata"
    install -d -m 0755 -o postgres -g postgres "$DATA_MOUNT/postgresql/$PG_MAJOR"
    install -d -m 0700 -o postgres -g postgres "$pgdata"
    pg_createcluster "$PG_MAJOR" main -d "$pgdata" --locale C.UTF-8 -- --data-checksums >/dev/null
  fi
}

# Writes the tuning and pg_hba files; sets changed=1 when PostgreSQL needs a restart.
configure_postgresql() {
  valid PG_LISTEN_ADDRESSES "$PG_LISTEN_ADDRESSES" '^[A-Za-z0-9.:,*-]+$'
  valid PG_PORT "$PG_PORT" '^[0-9]+$'
  valid DB_NAME "$DB_NAME" '^[a-z_][a-z0-9_]*$'
  valid DB_USER "$DB_USER" '^[a-z_][a-z0-9_]*$'
  [ -z "$PG_APP_CIDR" ] || valid PG_APP_CIDR "$PG_APP_CIDR" '^[0-9a-fA-F.:]+/[0-9]+$'
  local tmp
  install -d -m 0755 -o postgres -g postgres "$pgconf/conf.d"

  tmp=$(mktemp)
  cat > "$tmp" <<EOF
# Written by nexusd-provision (re-run it rather than editing this file).
# Sized for a 1 GB e2-micro shared with nexusd (MemoryMax 256M) and the Ops Agent.
listen_addresses = '$PG_LISTEN_ADDRESSES'
port = $PG_PORT
max_connections = 25
superuser_reserved_connections = 3
password_encryption = scram-sha-256

shared_buffers = 128MB
effective_cache_size = 384MB
work_mem = 4MB
maintenance_work_mem = 64MB
max_worker_processes = 4
max_parallel_workers_per_gather = 1
max_parallel_maintenance_workers = 1
# JIT compiles are slow on a shared vCPU and pay off only for big analytic queries.
jit = off

max_wal_size = 1GB
min_wal_size = 80MB
checkpoint_completion_target = 0.9
# pd-balanced is SSD-backed.
random_page_cost = 1.1
effective_io_concurrency = 100

autovacuum_max_workers = 2
autovacuum_naptime = 30s

# What nexusd's /metrics reads (pg_stat_statements, IO timings).
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.max = 1000
pg_stat_statements.track = top
track_io_timing = on

log_min_duration_statement = 1000
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'

# Continuous WAL archiving through nexusd into the backup bucket (docs/pitr.md): at most
# 60 s of writes are lost. The archiver runs as postgres and reads only wal.env.
wal_level = replica
archive_mode = on
archive_timeout = 60s
archive_command = '/usr/local/bin/nexusd --env-file /etc/nexusd/wal.env wal-push %p'
EOF
  install_if_changed "$tmp" "$pgconf/conf.d/50-nexusd.conf" 0644 postgres:postgres

  # What wal-push needs (where the archive is), without the secrets of nexusd.env.
  install -d -m 0755 /etc/nexusd
  tmp=$(mktemp)
  {
    echo "# Written by nexusd-provision: the archive_command's settings (no secrets)."
    if [ -f "$NEXUSD_SETTINGS" ]; then
      grep -E '^(NEXUSD_BACKUP_|NEXUSD_GCS_|NEXUSD_WAL_|NEXUSD_LOG)' "$NEXUSD_SETTINGS" || true
    fi
  } > "$tmp"
  install_if_changed "$tmp" /etc/nexusd/wal.env 0640 root:postgres

  tmp=$(mktemp)
  hba() { printf '%-7s %-15s %-15s %-23s %s\n' "$@"; }
  {
    echo "# Written by nexusd-provision (re-run it rather than editing this file)."
    hba '# TYPE' DATABASE USER ADDRESS METHOD
    echo "# Administration as the postgres OS user, and local peers."
    hba local all postgres '' peer
    hba local all all '' peer
    echo "# nexusd on this VM. All databases: its restore verification uses scratch databases."
    hba host all "$DB_USER" 127.0.0.1/32 scram-sha-256
    hba host all "$DB_USER" ::1/128 scram-sha-256
    if [ -n "$PG_APP_CIDR" ]; then
      echo "# The application role from the VPC connector range only (the firewall keeps 5432"
      echo "# closed unless terraform's allow_postgres_from_connector is set)."
      hba host "$DB_NAME" "$DB_USER" "$PG_APP_CIDR" scram-sha-256
    fi
  } > "$tmp"
  install_if_changed "$tmp" "$pgconf/pg_hba.conf" 0640 postgres:postgres

  if have_systemd; then
    # Start only with the data disk mounted and the internal IP configured (listen_addresses).
    tmp=$(mktemp)
    cat > "$tmp" <<EOF
# Written by nexusd-provision.
[Unit]
RequiresMountsFor=$DATA_MOUNT
Wants=network-online.target
After=network-online.target
EOF
    install -d -m 0755 "/etc/systemd/system/postgresql@$PG_MAJOR-main.service.d"
    install_if_changed "$tmp" "/etc/systemd/system/postgresql@$PG_MAJOR-main.service.d/nexusd.conf" 0644 root:root
    systemctl daemon-reload
  fi
}

start_postgresql() { # start_postgresql restart|start
  if have_systemd; then
    systemctl enable -q postgresql
    systemctl "$1" "postgresql@$PG_MAJOR-main"
  else
    if [ "$1" = restart ] || ! pg_ctlcluster "$PG_MAJOR" main status >/dev/null 2>&1; then
      pg_ctlcluster "$PG_MAJOR" main stop >/dev/null 2>&1 || true
      pg_ctlcluster "$PG_MAJOR" main start
    fi
  fi
  for _ in $(seq 1 60); do
    pg_isready -q -h /var/run/postgresql -p "$PG_PORT" && return 0
    sleep 1
  done
  die "PostgreSQL did not accept connections within 60 s (see /var/log/postgresql/)"
}

# --- secrets --------------------------------------------------------------------------------

metadata() {
  curl -fsS --retry 5 --retry-connrefused -H 'Metadata-Flavor: Google' \
    "http://metadata.google.internal/computeMetadata/v1/$1"
}

access_token=""
gcp_token() {
  if [ -z "$access_token" ]; then
    access_token=$(metadata instance/service-accounts/default/token | jq -r .access_token)
  fi
  printf '%s' "$access_token"
}

# secret NAME: prints the latest version of secret NAME; nothing when it has no enabled version.
# The value goes to stdout only (callers capture it); the bearer token reaches curl on stdin.
secret() {
  local name=$1 body status
  if [ -n "$SECRETS_DIR" ]; then
    [ -f "$SECRETS_DIR/$name" ] && cat "$SECRETS_DIR/$name"
    return 0
  fi
  [ -n "$GCP_PROJECT" ] || GCP_PROJECT=$(metadata project/project-id)
  body=$(mktemp)
  status=$(printf 'Authorization: Bearer %s\n' "$(gcp_token)" | curl -sS --retry 5 -H @- \
    -o "$body" -w '%{http_code}' \
    "https://secretmanager.googleapis.com/v1/projects/$GCP_PROJECT/secrets/$name/versions/latest:access")
  case "$status" in
    200) jq -r .payload.data "$body" | base64 -d ;;
    # No version yet, or the latest one is disabled: treated as unset.
    404|400) ;;
    *) rm -f "$body"; die "Secret Manager answered HTTP $status for secret $name (does the VM's service account have roles/secretmanager.secretAccessor on it?)" ;;
  esac
  rm -f "$body"
}

# Secrets go into nexusd.env single-quoted; a quote or a newline would end the value early.
check_env_safe() {
  case "$2" in
    *"'"*|*$'\n'*) die "secret $1 contains a quote or a newline, which nexusd.env cannot hold" ;;
  esac
}

# --- database -------------------------------------------------------------------------------

configure_database() {
  local password
  password=$(secret "$SECRET_POSTGRES_PASSWORD")
  [ -n "$password" ] || die "secret $SECRET_POSTGRES_PASSWORD has no value: add one with
  printf '%s' \"\$PASSWORD\" | gcloud secrets versions add $SECRET_POSTGRES_PASSWORD --data-file=-"
  db_password=$password

  # The password reaches psql through the environment (\getenv), never argv; the session turns
  # off every log and statistic that could record the statement carrying it.
  log "configuring role $DB_USER and database $DB_NAME"
  NEXUSD_DB_PASSWORD=$password \
  PGOPTIONS='-c client_min_messages=warning -c log_statement=none -c log_min_error_statement=panic -c log_min_duration_statement=-1 -c pg_stat_statements.track_utility=off' \
    runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p "$PG_PORT" -d postgres \
      -v db_name="$DB_NAME" -v db_user="$DB_USER" >/dev/null <<'SQL'
\getenv app_password NEXUSD_DB_PASSWORD
SELECT format('CREATE ROLE %I LOGIN', :'db_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'db_user') \gexec
-- CREATEDB: nexusd verifies backups by restoring them into scratch databases.
-- pg_monitor: /metrics reads pg_stat_statements and pg_stat_* for every role.
ALTER ROLE :"db_user" WITH LOGIN NOSUPERUSER NOCREATEROLE CREATEDB PASSWORD :'app_password';
GRANT pg_monitor TO :"db_user";
-- So /metrics can keep its own monitoring queries out of pg_stat_statements.
GRANT SET ON PARAMETER pg_stat_statements.track TO :"db_user";

-- Only the superuser can create these extensions. In template1 as well, so that every database
-- created later (the scratch restores) already has them.
\connect template1
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
ALTER EXTENSION vector UPDATE;
ALTER EXTENSION pg_stat_statements UPDATE;

\connect postgres
SELECT format('CREATE DATABASE %I OWNER %I', :'db_name', :'db_user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db_name') \gexec
REVOKE ALL ON DATABASE :"db_name" FROM PUBLIC;
GRANT ALL ON DATABASE :"db_name" TO :"db_user";

\connect :"db_name"
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
ALTER EXTENSION vector UPDATE;
ALTER EXTENSION pg_stat_statements UPDATE;
SQL
}

# --- nexusd ---------------------------------------------------------------------------------

# Sets changed=1 when it installed a new binary.
install_nexusd() {
  [ -n "$NEXUSD_BINARY_URL" ] || die "NEXUSD_BINARY_URL is not set in $settings_file"
  valid NEXUSD_BINARY_SHA256 "$NEXUSD_BINARY_SHA256" '^[0-9a-f]{64}$'
  local target=/usr/local/bin/nexusd tmp
  if [ -x "$target" ] && sha256sum "$target" | grep -q "^$NEXUSD_BINARY_SHA256 "; then
    return 0
  fi
  log "installing nexusd from $NEXUSD_BINARY_URL"
  tmp=$(mktemp /usr/local/bin/.nexusd.XXXXXX)
  case "$NEXUSD_BINARY_URL" in
    gs://*)
      local path=${NEXUSD_BINARY_URL#gs://} bucket object
      bucket=${path%%/*}
      object=$(printf '%s' "${path#*/}" | jq -sRr @uri)
      printf 'Authorization: Bearer %s\n' "$(gcp_token)" | curl -fsS --retry 5 -H @- -o "$tmp" \
        "https://storage.googleapis.com/storage/v1/b/$bucket/o/$object?alt=media" ;;
    https://*) curl -fsSL --proto '=https' --retry 5 -o "$tmp" "$NEXUSD_BINARY_URL" ;;
    file://*) cp "${NEXUSD_BINARY_URL#file://}" "$tmp" ;;
    /*) cp "$NEXUSD_BINARY_URL" "$tmp" ;;
    *) rm -f "$tmp"; die "NEXUSD_BINARY_URL must be gs://, https://, file:// or an absolute path" ;;
  esac
  if ! sha256sum "$tmp" | grep -q "^$NEXUSD_BINARY_SHA256 "; then
    rm -f "$tmp"
    die "the nexusd binary from $NEXUSD_BINARY_URL does not match NEXUSD_BINARY_SHA256: not installed"
  fi
  chmod 0755 "$tmp"
  mv -f "$tmp" "$target"
  log "installed $("$target" --version)"
  changed=1
}

# Sets changed=1 when /etc/nexusd/nexusd.env changed.
write_nexusd_env() {
  local tmp name var value enc
  install -d -m 0755 /etc/nexusd
  umask 077
  tmp=$(mktemp /etc/nexusd/.nexusd.env.XXXXXX)
  umask 022
  enc=$(printf '%s' "$db_password" | jq -sRr @uri)
  {
    printf '# Written by nexusd-provision from %s and Secret Manager.\n' "$NEXUSD_SETTINGS"
    printf '# Re-run nexusd-provision rather than editing this file.\n'
    [ -f "$NEXUSD_SETTINGS" ] && cat "$NEXUSD_SETTINGS"
    # Percent-encoded, so the URL (and this file) holds only URL-safe characters.
    printf 'DATABASE_URL=postgresql://%s:%s@127.0.0.1:%s/%s\n' "$DB_USER" "$enc" "$PG_PORT" "$DB_NAME"
    for var in GITHUB_TOKEN OPENAI_API_KEY NEXUSD_API_TOKENS; do
      name="SECRET_$var"
      name=${!name}
      [ -n "$name" ] || continue
      value=$(secret "$name")
      if [ -z "$value" ]; then
        log "secret $name has no version: $var left unset"
        continue
      fi
      check_env_safe "$name" "$value"
      printf "%s='%s'\n" "$var" "$value"
    done
  } > "$tmp"
  install_if_changed "$tmp" /etc/nexusd/nexusd.env 0640 root:nexusd
}

start_nexusd() { # start_nexusd restart|start
  [ -f /etc/systemd/system/nexusd.service ] || die "/etc/systemd/system/nexusd.service is missing (cloud-init writes it)"
  if [ "$START_SERVICE" != true ]; then
    log "START_SERVICE=$START_SERVICE: not starting nexusd.service"
    return 0
  fi
  have_systemd || die "systemd is not running: set START_SERVICE=false and start nexusd yourself"
  systemctl daemon-reload
  systemctl enable -q nexusd
  systemctl "$1" nexusd
}

configure_ops_agent() {
  [ "$OPS_AGENT" = true ] || return 0
  [ -f "$OPS_AGENT_CONFIG" ] || die "OPS_AGENT=true but $OPS_AGENT_CONFIG is missing"
  local tmp
  tmp=$(mktemp)
  cp "$OPS_AGENT_CONFIG" "$tmp"
  changed=0
  install_if_changed "$tmp" /etc/google-cloud-ops-agent/config.yaml 0644 root:root
  if [ "$changed" -eq 1 ] && have_systemd; then
    systemctl restart google-cloud-ops-agent
  fi
}

check_health() {
  [ "$START_SERVICE" = true ] || return 0
  local body
  # 503 until nexusd has bootstrapped the database (migrations on first start).
  for _ in $(seq 1 90); do
    if body=$(curl -fsS -m 5 "$NEXUSD_HEALTH_URL" 2>/dev/null); then
      log "nexusd is healthy: $body"
      return 0
    fi
    sleep 2
  done
  if have_systemd; then journalctl -u nexusd -n 30 --no-pager >&2 || true; fi
  die "nexusd did not report healthy at $NEXUSD_HEALTH_URL within 3 minutes"
}

configure() {
  command -v pg_createcluster >/dev/null || die "PostgreSQL is not installed: run '$0 packages' first"
  create_system_user
  setup_swap
  setup_data_disk
  setup_cluster
  changed=0
  configure_postgresql
  if [ "$changed" -eq 1 ]; then start_postgresql restart; else start_postgresql start; fi
  configure_database
  changed=0
  install_nexusd
  write_nexusd_env
  if [ "$changed" -eq 1 ]; then start_nexusd restart; else start_nexusd start; fi
  configure_ops_agent
  check_health
  install -d -m 0755 "$state_dir"
  date -u +%Y-%m-%dT%H:%M:%SZ > "$state_dir/configured"
  log "done"
}

[ "$(id -u)" -eq 0 ] || die "run as root"
cd /
case "$phase" in
  packages) packages ;;
  configure) configure ;;
  all) packages; configure ;;
esac
