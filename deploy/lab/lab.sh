#!/bin/sh
# The two-domain lab on loopback: DNS (twisted.names), a.lab and b.lab proxies, and a
# redirect server. PIDs and logs go under var/lab/ (relative to the repository).
#
#   deploy/lab/lab.sh up      start everything (a.lab :5060, b.lab :5070,
#                             redirect :5080, DNS 127.0.0.1:5353)
#   deploy/lab/lab.sh down    stop what `up` started, by the PIDs it wrote
#   deploy/lab/lab.sh status  which of them are running
#
# a.lab finds b.lab through DNS SRV (lab.zone.py) and b.lab finds a.lab the same way;
# alice@a.lab and bob@b.lab register with their own proxy (passwords in *.users).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VAR="$ROOT/var/lab"
TWISTD="${TWISTD:-$ROOT/.venv/bin/twistd}"
IP="${LAB_IP:-127.0.0.1}"
DNS_PORT="${LAB_DNS_PORT:-5353}"

. "$ROOT/deploy/daemons.sh"

case "${1:-}" in
up)
    mkdir -p "$VAR"
    start_twistd dns dns --pyzone "$HERE/lab.zone.py" -i "$IP" -p "$DNS_PORT"
    start_twistd a.lab sipproxy --domain a.lab --interface "$IP" --port 5060 \
        --location "sqlite:$VAR/a.lab.sqlite" --users "$HERE/a.lab.users" \
        --dns "$IP:$DNS_PORT"
    start_twistd b.lab sipproxy --domain b.lab --interface "$IP" --port 5070 \
        --location "sqlite:$VAR/b.lab.sqlite" --users "$HERE/b.lab.users" \
        --dns "$IP:$DNS_PORT"
    start_twistd redirect sipredirect --domain a.lab --interface "$IP" --port 5080 \
        --location "sqlite:$VAR/a.lab.sqlite" --route "b.lab=$IP:5070"
    ;;
down)
    for name in redirect b.lab a.lab dns; do stop "$name"; done
    ;;
status)
    status dns a.lab b.lab redirect
    ;;
*)
    echo "usage: $0 up|down|status" >&2; exit 2
    ;;
esac
