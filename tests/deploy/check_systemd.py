#!/usr/bin/env python3
"""systemd/nexusd.service: `systemd-analyze verify` passes with no output, the settings the
deployment relies on are there, and `systemd-analyze security` rates the sandbox as OK.

usage: check_systemd.py [NEXUSD_BINARY]

verify insists that ExecStart's binary exists, and a build machine has no
/usr/local/bin/nexusd: the check verifies a copy of the unit whose ExecStart names
NEXUSD_BINARY (the freshly built target/…/nexusd) and is otherwise byte for byte the same.
Units named in Wants=/After= that a build machine lacks (postgresql.service) are not errors
for verify, so nothing needs filtering: any output at all fails the check.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from _common import REPO, Checks, require_tool, run

UNIT = REPO / "systemd" / "nexusd.service"
EXEC_START = "ExecStart=/usr/local/bin/nexusd serve"


def parse_unit(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> values, in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


def main() -> None:
    checks = Checks("systemd unit")
    analyze = require_tool("systemd-analyze", "apt-get install systemd")
    binary = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "target" / "debug" / "nexusd"
    if not binary.is_file():
        print(f"FAIL  {binary} does not exist: build nexusd first (cargo build)")
        sys.exit(1)

    text = UNIT.read_text()
    checks.check(text.count(EXEC_START) == 1, f"the unit has exactly one '{EXEC_START}'")

    with tempfile.TemporaryDirectory(prefix="nexusd-unit-") as tmp:
        copy = Path(tmp) / "nexusd.service"
        copy.write_text(text.replace(EXEC_START, f"ExecStart={binary.resolve()} serve"))
        verify = run([analyze, "verify", "--man=no", str(copy)])
        output = (verify.stdout + verify.stderr).strip()
        checks.check(
            verify.returncode == 0 and output == "",
            "systemd-analyze verify: no errors, no warnings",
            f"exit {verify.returncode}: {output}",
        )
        security = run([analyze, "security", "--offline=true", str(copy)])
        match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout + security.stderr)
        exposure = float(match.group(1)) if match else 99.0
        checks.check(
            security.returncode == 0 and exposure <= 2.5,
            f"systemd-analyze security: exposure {exposure} <= 2.5",
            (security.stdout + security.stderr)[-2000:],
        )

    unit = parse_unit(text)

    def has(key: str, value: str | None = None, why: str = "") -> None:
        values = unit.get(key, [])
        if value is None:
            checks.check(bool(values), f"{key} is set {why}".rstrip(), "missing")
        else:
            checks.check(value in values, f"{key}={value} {why}".rstrip(), f"found {values}")

    has("Service.Type", "notify", "(READY=1 once listening)")
    has("Service.NotifyAccess", "main")
    has("Service.WatchdogSec", None, "(nexusd pings at half of WATCHDOG_USEC)")
    has("Service.Restart", "on-failure")
    has("Service.RestartSec")
    has("Service.User", "nexusd")
    has("Service.Group", "nexusd")
    has("Service.EnvironmentFile", "/etc/nexusd/nexusd.env")
    has("Service.StateDirectory", "nexusd", "(NEXUSD_STATE_DIR=/var/lib/nexusd)")
    has("Service.KillMode", "mixed")
    has("Service.MemoryMax")
    has("Service.MemoryHigh")
    has("Service.LimitNOFILE")
    for key, value in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallErrorNumber", "EPERM"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0077"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK"),
    ]:
        has(f"Service.{key}", value)

    stop = unit.get("Service.TimeoutStopSec", ["0"])[-1]
    seconds = int(re.sub(r"s$", "", stop)) if re.fullmatch(r"\d+s?", stop) else 0
    checks.check(
        seconds > 10,
        f"TimeoutStopSec={stop} leaves nexusd its 10 s to stop",
    )
    for key in ("Unit.Wants", "Unit.After"):
        words = " ".join(unit.get(key, [])).split()
        checks.check(
            "postgresql.service" in words and "network-online.target" in words,
            f"{key} names postgresql.service and network-online.target",
            f"found {words}",
        )
    checks.check(
        "pid" not in unit.get("Service.ProcSubset", []),
        "no ProcSubset=pid (host metrics read /proc/stat, /proc/meminfo, /proc/diskstats)",
    )
    checks.check(
        unit.get("Install.WantedBy") == ["multi-user.target"], "WantedBy=multi-user.target"
    )
    checks.done()


if __name__ == "__main__":
    main()
