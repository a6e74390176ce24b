#!/bin/bash
# Run deploy/patron-bridge.service under a real systemd (PID 1 of a systemd-nspawn container
# over a debootstrap'ed Debian bookworm tree) and check what the unit promises:
# READY=1 / RELOADING=1 / STOPPING=1 reach systemd, the daemon runs as the patron-bridge user
# with only CAP_NET_BIND_SERVICE, binds 389 and 1812, answers an LDAP bind and a RADIUS
# Access-Request there, takes a RADIUS secret change on `systemctl reload`, and stops cleanly.
#
# Needs root, debootstrap and systemd-container (Debian packages), and a mirror for debootstrap
# (first run only: the tree is kept in $TRIAL_ROOT and reused). Run from a checkout whose
# .venv holds the bridge (`make dev`); its site-packages and the bridge's sources are copied
# into /opt/patron-bridge in the tree (the tree's python3 is Debian's 3.11, the same ABI).
# Used by tests/deploy/test_systemd_boot.py; also a manual procedure (docs/operations.md).
#
#   sudo deploy/systemd-trial.sh            # prints what it ran and saw; exit 0 when all held
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${TRIAL_ROOT:-/var/lib/machines/patron-bridge-trial}
PYTHON=${TRIAL_PYTHON:-$HERE/.venv/bin/python}
MIRROR=${TRIAL_MIRROR:-http://deb.debian.org/debian}
NAME=pb-trial-$$
WORK=$(mktemp -d)  # what the checks read back

say() { printf '\n$ %s\n' "$*"; }
fail() {
  echo "FAILED: $*" >&2
  if [ -n "${leader:-}" ]; then  # what the service said, for the reader
    nsenter -t "$leader" -a journalctl --no-pager -n 30 -u patron-bridge >&2 || true
  fi
  exit 1
}

# -- the tree ------------------------------------------------------------------------------------
if [ ! -x "$ROOT/usr/lib/systemd/systemd" ]; then
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,python3,python3-venv,python3-async-timeout,procps,iproute2,curl \
    bookworm "$ROOT" "$MIRROR" >/dev/null
fi

# -- the program: the checkout's bridge and its dependencies in a venv of the tree's python ------
site=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$ROOT/opt/patron-bridge"
chroot "$ROOT" python3 -m venv --system-site-packages /opt/patron-bridge
dest="$ROOT/opt/patron-bridge/lib/python3.11/site-packages"
tar -C "$site" --exclude='__editable__*' --exclude='playwright*' --exclude='pip' \
  --exclude='pip-*' --exclude='__pycache__' -cf - . | tar -C "$dest" -xf -
cp -a "$HERE/bridge" "$HERE/plugins" "$dest/"
printf '#!/opt/patron-bridge/bin/python3\nimport sys\nfrom bridge.cli import main\nsys.exit(main())\n' \
  >"$ROOT/usr/local/bin/patron-bridge"
chmod 0755 "$ROOT/usr/local/bin/patron-bridge"

# -- as docs/operations.md says: user, unit, config ----------------------------------------------
chroot "$ROOT" id patron-bridge >/dev/null 2>&1 ||
  chroot "$ROOT" useradd --system --home-dir /var/lib/patron-bridge --no-create-home \
    --shell /usr/sbin/nologin patron-bridge
install -m 0644 "$HERE/deploy/patron-bridge.service" "$ROOT/etc/systemd/system/"
rm -f "$ROOT/etc/systemd/system/multi-user.target.wants/patron-bridge.service"  # enabled below
rm -rf "$ROOT/var/lib/patron-bridge" "$ROOT/var/log/patron-bridge" "$ROOT/etc/patron-bridge"
# root owns the config (the service cannot change it); the service's group reads it. systemd
# does not chown a ConfigurationDirectory: with 0750 root:root the service could not read it.
install -d -m 0750 -o root -g "$(chroot "$ROOT" id -g patron-bridge)" "$ROOT/etc/patron-bridge"
cp "$HERE/conf/demo-patrons.csv" "$ROOT/etc/patron-bridge/"
cat >"$ROOT/etc/patron-bridge/bridge.toml" <<'EOF'
[store]
plugin = "sqlite"
path = "/var/lib/patron-bridge/patrons.db"
demo = true
demo_file = "demo-patrons.csv"
[security]
pepper_file = "/var/lib/patron-bridge/pepper.key"
[throttle]
path = "/var/lib/patron-bridge/throttle.db"
[control]
socket = "/var/lib/patron-bridge/bridge.sock"
[audit]
destination = "/var/log/patron-bridge/audit.log"
[ldap]
listen = ["127.0.0.1:389"]
base_dn = "dc=library,dc=example"
[radius]
listen = ["127.0.0.1:1812"]
[[radius.clients]]
name = "wifi"
network = "127.0.0.1/32"
secret = "radius-trial-secret-1"
[metrics]
listen = "127.0.0.1:9108"
EOF
chroot "$ROOT" chgrp patron-bridge /etc/patron-bridge/bridge.toml /etc/patron-bridge/demo-patrons.csv
chmod 0640 "$ROOT/etc/patron-bridge/bridge.toml" "$ROOT/etc/patron-bridge/demo-patrons.csv"
cat >"$ROOT/root/probe.py" <<'EOF'
"""An LDAP bind on 389 and a RADIUS Access-Request on 1812, as a client would send them."""
import pathlib
import sys

from ldap3 import Connection, Server
from pyrad import packet
from pyrad.client import Client
from pyrad.dictionary import Dictionary

import bridge

dn = "uid=21234000000001,ou=patrons,dc=library,dc=example"
ok = Connection(Server("127.0.0.1", 389, get_info="NO_INFO"), dn, "5961").bind()
print("ldap bind 21234000000001 on port 389:", ok)
words = Dictionary(str(pathlib.Path(bridge.__file__).parent / "radius" / "dictionary"))
client = Client(server="127.0.0.1", authport=1812, secret=sys.argv[1].encode(), dict=words,
                timeout=3, retries=1)
request = client.CreateAuthPacket(code=packet.AccessRequest, User_Name="21234000000001")
request["User-Password"] = request.PwCrypt("5961")
request.add_message_authenticator()
try:
    accepted = client.SendPacket(request).code == packet.AccessAccept
except Exception:  # a wrong secret gets no answer at all
    accepted = False
print(f"radius on port 1812 with secret {sys.argv[1]}:", "Access-Accept" if accepted else "no")
sys.exit(0 if ok and accepted else 1)
EOF

# -- boot ----------------------------------------------------------------------------------------
# --register=no --keep-unit: the host has no systemd (no machined, no bus to make a scope on).
systemd-nspawn -b -D "$ROOT" --machine="$NAME" --register=no --keep-unit --private-network \
  --console=pipe </dev/null >"$WORK/console.log" 2>&1 &
nspawn=$!
cleanup() {  # SIGTERM: a clean halt; a second one: immediate termination (systemd-nspawn(1))
  kill "$nspawn" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$nspawn" 2>/dev/null || return 0; sleep 0.1; done
  kill "$nspawn" 2>/dev/null || true
  wait "$nspawn" 2>/dev/null || true
}
trap cleanup EXIT
leader=""
for _ in $(seq 1 100); do
  # the container's PID 1 (nspawn forks short-lived helpers first)
  leader=$(ps -o pid=,comm= --ppid "$nspawn" | awk '$2 == "systemd" {print $1}' | head -n1 || true)
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || fail "the container did not start: $(cat "$WORK/console.log")"
inside() { nsenter -t "$leader" -a "$@"; }
for _ in $(seq 1 120); do
  state=$(inside systemctl is-system-running 2>/dev/null || true)
  case "$state" in running | degraded) break ;; esac
  sleep 0.5
done
say "systemctl is-system-running"; echo "$state"
inside systemd-analyze log-level debug  # to see the notify messages systemd receives

say "systemctl enable --now patron-bridge"
inside systemctl enable --now patron-bridge 2>&1 || fail "enable --now"

say "systemctl status patron-bridge"
inside systemctl --no-pager status patron-bridge | sed -n 1,7p
inside systemctl is-active --quiet patron-bridge || fail "patron-bridge is not active"
pid=$(inside systemctl show -p MainPID --value patron-bridge)
say "grep -E '^(Uid|CapEff|CapAmb|NoNewPrivs|Seccomp):' /proc/$pid/status"
inside grep -E '^(Uid|CapEff|CapAmb|NoNewPrivs|Seccomp):' "/proc/$pid/status" | tee "$WORK/status"
grep -q "^CapEff:.*0000000000000400$" "$WORK/status" || fail "capabilities: want CAP_NET_BIND_SERVICE only"
grep -q "^NoNewPrivs:.*1$" "$WORK/status" || fail "NoNewPrivs is not set"
say "id -un $(awk '/^Uid/{print $2}' "$WORK/status")"
inside id -un "$(awk '/^Uid/{print $2}' "$WORK/status")" | tee "$WORK/user"
grep -qx patron-bridge "$WORK/user" || fail "not running as patron-bridge"
say "ss -ltnup"
inside ss -ltnup | sed 's/  */ /g'
say "python3 /root/probe.py radius-trial-secret-1"
inside /opt/patron-bridge/bin/python3 /root/probe.py radius-trial-secret-1 || fail "probe"

sed -i 's/radius-trial-secret-1/radius-trial-secret-2/' "$ROOT/etc/patron-bridge/bridge.toml"
say "systemctl reload patron-bridge   # radius.clients secret changed"
inside systemctl reload patron-bridge || fail "reload"
sleep 0.5
say "python3 /root/probe.py radius-trial-secret-2"
inside /opt/patron-bridge/bin/python3 /root/probe.py radius-trial-secret-2 || fail "probe after reload"
say "grep config_reloaded /var/log/patron-bridge/audit.log"
inside grep config_reloaded /var/log/patron-bridge/audit.log || fail "no config_reloaded line"

say "systemctl kill -s KILL patron-bridge   # a crash: Restart=on-failure, RestartSec=2s"
inside systemctl kill -s KILL patron-bridge
for _ in $(seq 1 100); do
  now=$(inside systemctl show -p MainPID --value patron-bridge)
  [ "$now" != "$pid" ] && [ "$now" != "0" ] && inside systemctl is-active --quiet patron-bridge && break
  sleep 0.2
done
say "systemctl show -p NRestarts -p MainPID -p ActiveState patron-bridge"
inside systemctl show -p NRestarts -p MainPID -p ActiveState patron-bridge | tee "$WORK/restart"
grep -qx "NRestarts=1" "$WORK/restart" || fail "not restarted after a crash"
grep -qx "ActiveState=active" "$WORK/restart" || fail "not active after the restart"

say "systemctl stop patron-bridge"
inside systemctl stop patron-bridge || fail "stop"
inside systemctl --no-pager status patron-bridge | sed -n 3p || true  # exit 3: inactive
say "journalctl -b _PID=1 | grep patron-bridge.service: (notifications and states)"
inside journalctl -b --no-pager -o short-precise _PID=1 |
  grep -E "patron-bridge.service: (Got notification message|Changed)" |
  grep -v "dead -> dead" | sed 's/^[A-Z][a-z]* [0-9]* //' | tee "$WORK/notify"
for want in "READY=1" "RELOADING=1" "STOPPING=1" "stop-sigterm -> dead"; do
  grep -q "$want" "$WORK/notify" || fail "systemd never saw $want"
done
inside systemctl poweroff || true
wait "$nspawn" 2>/dev/null || true
trap - EXIT
rm -rf "$WORK"
echo
echo "systemd trial: every check held"
