#!/usr/bin/env bash
# A test cluster of network namespaces on one machine, for `featstream launch`.
#
#   netns-cluster.sh up N          hosts fs-h1..fs-hN (10.77.0.11..), a client namespace fs-ctl
#                                  (10.77.0.2) and a bridge in fs-switch; sshd in every host
#   netns-cluster.sh down          removes exactly what `up` recorded (also after a failed `up`)
#   netns-cluster.sh exec HOST CMD run CMD in HOST's namespace (HOST: fs-h1, h1, ctl, ...)
#   netns-cluster.sh cut HOST      pull HOST's cable (its switch port goes down)
#   netns-cluster.sh heal HOST     plug it back in
#   netns-cluster.sh ssh HOST CMD  ssh from fs-ctl to HOST with the cluster's client config
#
# The 10.77.0.0/24 network exists only inside these namespaces: the root namespace gets no
# address, no route and no interface, so test traffic cannot leak to any real network.
# State (keys, sshd configs, pid files, the record of what was created) lives in
# ${FEATSTREAM_NETNS_STATE:-/tmp/featstream-netns}. Needs root, iproute2 and OpenSSH
# (Debian: openssh-server openssh-client; installed here when missing).
set -euo pipefail

STATE=${FEATSTREAM_NETNS_STATE:-/tmp/featstream-netns}
RECORD="$STATE/created"
SUBNET=10.77.0
SWITCH=fs-switch
CTL=fs-ctl

die() { echo "netns-cluster: $*" >&2; exit 1; }
say() { echo "netns-cluster: $*" >&2; }

# Appended before each thing is created, so `down` also cleans up after a half-finished `up`.
record() { echo "$*" >>"$RECORD"; }

need_root() { [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"; }

ensure_tools() {
    command -v ip >/dev/null || die "iproute2 (ip) is missing"
    command -v setsid >/dev/null || die "util-linux (setsid) is missing"
    if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null || ! command -v ssh-keygen >/dev/null; then
        say "installing openssh-server openssh-client"
        # Installing must not start a system-wide sshd in the root namespace: a policy-rc.d
        # that refuses service starts is put in place only for the duration of the install.
        local policy=/usr/sbin/policy-rc.d ours=0
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && ours=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y openssh-server openssh-client >&2 || {
            [ $ours = 1 ] && rm -f "$policy"; die "apt-get install openssh-server openssh-client failed"; }
        [ $ours = 1 ] && rm -f "$policy"
    fi
}

# fs-h3, h3 and 3 all name host 3; ctl and switch name the helper namespaces.
ns_of() {
    case "$1" in
        fs-*) echo "$1" ;;
        ctl | switch) echo "fs-$1" ;;
        h[0-9]*) echo "fs-$1" ;;
        [0-9]*) echo "fs-h$1" ;;
        *) die "unknown host '$1' (use fs-hN, hN or ctl)" ;;
    esac
}

require_up() { [ -f "$RECORD" ] || die "no cluster is up (no $RECORD)"; }

require_ns() {
    grep -qx "netns $1" "$RECORD" || die "$1 is not part of this cluster"
}

# A namespace that only speaks on the test network: lo up, IPv6 off (no router solicitations
# or DAD chatter), one veth whose other end is a port of the switch's bridge.
make_node() {
    local ns=$1 addr=$2 port=$3
    record "netns $ns"
    ip netns add "$ns"
    ip netns exec "$ns" sh -c 'echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6' || true
    ip -n "$ns" link set lo up
    ip -n "$ns" link add eth0 type veth peer name "$port" netns "$SWITCH"
    ip -n "$SWITCH" link set "$port" master br0 up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
}

cmd_up() {
    local n=${1:-}
    [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "usage: up N (1..200 hosts)"
    need_root
    ensure_tools
    [ ! -e "$RECORD" ] || die "a cluster is already up (state in $STATE); run 'down' first"
    mkdir -p "$STATE"
    chmod 700 "$STATE"
    : >"$RECORD"
    record "state $STATE"
    trap 'say "up failed; tearing down what was created"; cmd_down >/dev/null 2>&1 || true' ERR

    record "netns $SWITCH"
    ip netns add "$SWITCH"
    ip netns exec "$SWITCH" sh -c 'echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6' || true
    ip -n "$SWITCH" link set lo up
    ip -n "$SWITCH" link add br0 type bridge
    ip -n "$SWITCH" link set br0 up
    make_node "$CTL" "$SUBNET.2" ctl

    # One host key for the whole cluster and one client key pair, both fresh per `up`.
    ssh-keygen -q -t ed25519 -N '' -C featstream-netns-host -f "$STATE/host_key"
    ssh-keygen -q -t ed25519 -N '' -C featstream-netns-client -f "$STATE/client_key"
    cp "$STATE/client_key.pub" "$STATE/authorized_keys"
    : >"$STATE/known_hosts"
    # sshd refuses to start without its privilege-separation directory.
    if [ ! -d /run/sshd ]; then record "rundir /run/sshd"; mkdir -p /run/sshd; chmod 755 /run/sshd; fi

    {
        echo "# Written by netns-cluster.sh up; the client side of the test cluster."
        echo "Host *"
        echo "    User root"
        echo "    IdentityFile $STATE/client_key"
        echo "    IdentitiesOnly yes"
        echo "    StrictHostKeyChecking accept-new"
        echo "    UserKnownHostsFile $STATE/known_hosts"
        echo "    GlobalKnownHostsFile /dev/null"
        echo "    BatchMode yes"
        echo "    ConnectTimeout 5"
        echo "    LogLevel ERROR"
    } >"$STATE/ssh_config.tmp"

    local i ns addr
    for i in $(seq 1 "$n"); do
        ns=fs-h$i
        addr=$SUBNET.$((10 + i))
        make_node "$ns" "$addr" "h$i"
        mkdir -p "$STATE/$ns"
        cat >"$STATE/$ns/sshd_config" <<EOF
# sshd for test host $ns, started by netns-cluster.sh inside its namespace.
ListenAddress $addr
Port 22
HostKey $STATE/host_key
PidFile $STATE/$ns/sshd.pid
AuthorizedKeysFile $STATE/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The state dir sits under /tmp, which is world-writable; the key files themselves are 0600.
StrictModes no
PrintMotd no
PrintLastLog no
MaxStartups 100
MaxSessions 100
LogLevel ERROR
EOF
        record "sshd $ns $STATE/$ns/sshd.pid"
        ip netns exec "$ns" /usr/sbin/sshd -f "$STATE/$ns/sshd_config" -E "$STATE/$ns/sshd.log"
        printf 'Host %s h%s\n    HostName %s\n' "$ns" "$i" "$addr" >>"$STATE/ssh_config.tmp"
    done
    mv "$STATE/ssh_config.tmp" "$STATE/ssh_config"

    # Every host must answer before `up` reports success; this also fills known_hosts.
    local pids=() failed=0
    for i in $(seq 1 "$n"); do
        ( for _ in $(seq 1 50); do
              ip netns exec "$CTL" ssh -F "$STATE/ssh_config" "fs-h$i" true 2>/dev/null && exit 0
              sleep 0.1
          done
          ip netns exec "$CTL" ssh -F "$STATE/ssh_config" "fs-h$i" true ) &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
    [ $failed = 0 ] || false
    trap - ERR
    say "up: $n hosts fs-h1..fs-h$n ($SUBNET.11..$SUBNET.$((10 + n))), client namespace $CTL ($SUBNET.2); ssh -F $STATE/ssh_config"
}

pid_is() { [ -r "/proc/$1/comm" ] && [ "$(cat "/proc/$1/comm")" = "$2" ]; }

cmd_down() {
    need_root
    if [ ! -f "$RECORD" ]; then
        say "down: nothing to tear down ($RECORD does not exist)"
        [ -d "$STATE" ] && rm -rf "$STATE"
        return 0
    fi
    local kind a b pid
    # sshd first: it is what keeps sessions (and their children) alive.
    while read -r kind a b; do
        [ "$kind" = sshd ] || continue
        if [ -f "$b" ]; then
            pid=$(cat "$b")
            if pid_is "$pid" sshd; then kill -TERM "$pid" 2>/dev/null || true; fi
        fi
    done <"$RECORD"
    # Anything still running in our namespaces was started through this cluster; a namespace
    # cannot really go away while a process holds it.
    local namespaces=()
    while read -r kind a b; do [ "$kind" = netns ] && namespaces+=("$a"); done <"$RECORD"
    local ns left
    for attempt in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
        left=""
        for ns in "${namespaces[@]}"; do
            ip netns list 2>/dev/null | grep -qw "^$ns" || continue
            left="$left $(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
        done
        left=$(echo "$left" | xargs)
        [ -z "$left" ] && break
        if [ "$attempt" = 1 ]; then
            say "down: stopping processes left in the namespaces: $(for p in $left; do printf '%s(%s) ' "$p" "$(cat /proc/$p/comm 2>/dev/null)"; done)"
        fi
        if [ "$attempt" -lt 10 ]; then kill -TERM $left 2>/dev/null || true; else kill -KILL $left 2>/dev/null || true; fi
        sleep 0.2
    done
    # Reverse order: hosts before the switch they are plugged into.
    local i
    for ((i = ${#namespaces[@]} - 1; i >= 0; i--)); do
        ip netns delete "${namespaces[$i]}" 2>/dev/null || true
    done
    while read -r kind a b; do
        [ "$kind" = rundir ] && rmdir "$a" 2>/dev/null || true
    done <"$RECORD"
    rm -rf "$STATE"
    say "down: removed ${#namespaces[@]} namespaces and $STATE"
}

cmd_exec() {
    [ $# -ge 2 ] || die "usage: exec HOST CMD..."
    require_up
    local ns
    ns=$(ns_of "$1"); shift
    require_ns "$ns"
    exec ip netns exec "$ns" "$@"
}

cmd_ssh() {
    [ $# -ge 1 ] || die "usage: ssh HOST [CMD...]"
    require_up
    exec ip netns exec "$CTL" ssh -F "$STATE/ssh_config" "$@"
}

cmd_link() {
    local state=$1 host=${2:-}
    [ -n "$host" ] || die "usage: cut|heal HOST"
    require_up
    local ns port
    ns=$(ns_of "$host")
    require_ns "$ns"
    port=${ns#fs-}
    ip -n "$SWITCH" link set "$port" "$state"
    say "$ns: switch port $port $state"
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    down) cmd_down ;;
    exec) shift; cmd_exec "$@" ;;
    ssh) shift; cmd_ssh "$@" ;;
    cut) cmd_link down "${2:-}" ;;
    heal) cmd_link up "${2:-}" ;;
    *) echo "usage: $0 up N | down | exec HOST CMD... | ssh HOST [CMD...] | cut HOST | heal HOST" >&2; exit 2 ;;
esac
