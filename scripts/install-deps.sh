#!/usr/bin/env bash
# Installs, only when missing, the Debian packages Berth's one-machine stack
# (`make run`) and its tests (`make test`) need. Runs `apt-get update` once,
# and only when something is missing. Go itself is not installed here: it
# must already be on PATH, as new as go.mod asks.
#
#   scripts/install-deps.sh            install what is missing
#   scripts/install-deps.sh --dry-run  only say what would be installed
set -euo pipefail

dry_run=0
[[ "${1:-}" == "--dry-run" ]] && dry_run=1

cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

have() { command -v "$1" >/dev/null 2>&1; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
py3_has() { /usr/bin/python3 -c "import $1" >/dev/null 2>&1; }
pg_present() {
	local d
	for d in /usr/local/bin /usr/lib/postgresql/*/bin; do
		[[ -x "$d/initdb" && -x "$d/postgres" ]] && return 0
	done
	return 1
}

# package | probe that succeeds when the package (or an equivalent) is there
missing=()
need() { local pkg=$1; shift; "$@" || missing+=("$pkg"); }
need docker.io              have dockerd                       # docker-ce satisfies it too
need openvswitch-switch     have ovs-vswitchd
need keystone               have keystone-manage
need python3-openstackclient have openstack
need uwsgi-core             have uwsgi
need uwsgi-plugin-python3   test -e /usr/lib/uwsgi/plugins/python3_plugin.so
need python3-psycopg2       py3_has psycopg2
need busybox-static         installed busybox-static           # the demo image copies a static /bin/busybox
need ethtool                have ethtool
need iproute2               have ip
need iputils-ping           have ping
need iptables               have iptables
need procps                 have ps
if ! pg_present; then
	if apt-cache show postgresql-15 >/dev/null 2>&1; then missing+=(postgresql-15); else missing+=(postgresql); fi
fi

go_ok=1
if ! have go; then
	echo "install-deps: Go is not on PATH; install the version go.mod names from https://go.dev/dl/" >&2
	go_ok=0
fi

if ((${#missing[@]} == 0)); then
	echo "install-deps: all packages present"
	((go_ok)) || exit 1
	exit 0
fi
echo "install-deps: missing: ${missing[*]}"
if ((dry_run)); then
	exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	have sudo || { echo "install-deps: run as root (or install sudo)" >&2; exit 1; }
	sudo=(sudo)
fi

# Debian's keystone postinst starts Keystone (uwsgi on :5000, the port
# make run wants), postgresql's starts a cluster on :5432 we never use.
# Unless the machine already has a policy (containers usually deny every
# start), deny those starts for the duration of the install.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then
	"${sudo[@]}" tee "$policy" >/dev/null <<'POLICY'
#!/bin/sh
# Temporary, from berth scripts/install-deps.sh: keep services Berth runs
# itself from being started by package installs.
case "$1" in
keystone|postgresql) exit 101 ;;
esac
exit 0
POLICY
	"${sudo[@]}" chmod 755 "$policy"
	made_policy=1
fi
cleanup() { if ((made_policy)); then "${sudo[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"

# Keep Debian's own Keystone service off :5000 at the next boot as well.
if [[ -d /run/systemd/system ]] && systemctl list-unit-files keystone.service >/dev/null 2>&1; then
	"${sudo[@]}" systemctl disable --now keystone.service >/dev/null 2>&1 || true
elif [[ -x /etc/init.d/keystone ]] && have update-rc.d; then
	"${sudo[@]}" update-rc.d keystone disable >/dev/null 2>&1 || true
fi

echo "install-deps: installed ${missing[*]}"
((go_ok)) || exit 1
