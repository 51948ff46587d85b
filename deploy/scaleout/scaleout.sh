#!/bin/sh
# Scale-out past one machine, rehearsed on loopback: two `twistd sipproxy` nodes for
# a.lab on 127.0.0.2 and 127.0.0.3 (Linux answers the whole 127/8 without any alias
# set-up), one Redis holding the location service for both, and a twisted.names DNS
# server publishing the nodes as SRV records (priority 10 node1, 20 node2). A caller
# anywhere finds a.lab by SRV (RFC 3263); a phone registered through one node is
# reachable through the other. PIDs and logs go under var/scaleout/.
#
#   deploy/scaleout/scaleout.sh up       start redis, dns, node1, node2
#   deploy/scaleout/scaleout.sh down     stop them, by the PIDs `up` wrote
#   deploy/scaleout/scaleout.sh status
#
# Environment: SCALEOUT_PORT (SIP port of every node, default 5060), SCALEOUT_DNS_PORT
# (5354), SCALEOUT_REDIS_PORT (6390), SCALEOUT_WORKERS (processes per node, default 1).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VAR="$ROOT/var/scaleout"
TWISTD="${TWISTD:-$ROOT/.venv/bin/twistd}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
PORT="${SCALEOUT_PORT:-5060}"
DNS_PORT="${SCALEOUT_DNS_PORT:-5354}"
REDIS_PORT="${SCALEOUT_REDIS_PORT:-6390}"
WORKERS="${SCALEOUT_WORKERS:-1}"
LOCATION="redis://127.0.0.1:$REDIS_PORT/0"

. "$ROOT/deploy/daemons.sh"

case "${1:-}" in
up)
    mkdir -p "$VAR"
    if running redis; then
        echo "redis already running (pid $(cat "$VAR/redis.pid"))"
    else
        # Loopback only, no persistence: the bindings are soft state re-sent by phones.
        "$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
            --daemonize yes --pidfile "$VAR/redis.pid" --logfile "$VAR/redis.log" \
            --dir "$VAR"
        i=0; while [ ! -s "$VAR/redis.pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
        echo "redis started (pid $(cat "$VAR/redis.pid"), 127.0.0.1:$REDIS_PORT)"
    fi
    sed "s/@SCALEOUT_PORT@/$PORT/" "$HERE/scaleout.zone.py" > "$VAR/a.lab.zone.py"
    start_twistd dns dns --pyzone "$VAR/a.lab.zone.py" -i 127.0.0.1 -p "$DNS_PORT"
    for n in 1 2; do
        start_twistd "node$n" sipproxy --domain a.lab --interface "127.0.0.$((n + 1))" \
            --port "$PORT" --location "$LOCATION" --workers "$WORKERS" --quiet
    done
    echo "a.lab: SRV _sip._udp.a.lab at 127.0.0.1:$DNS_PORT -> node1 127.0.0.2:$PORT" \
         "(priority 10), node2 127.0.0.3:$PORT (priority 20)"
    ;;
down)
    for name in node2 node1 dns redis; do stop "$name"; done
    ;;
status)
    status redis dns node1 node2
    ;;
*)
    echo "usage: $0 up|down|status" >&2; exit 2
    ;;
esac
