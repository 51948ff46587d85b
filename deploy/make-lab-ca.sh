#!/usr/bin/env bash
# make-lab-ca.sh: a private CA and the certificates the two-domain lab needs for SIPS/TLS
# (RFC 3261 §26.3.1; RFC 5922 §7.1: a SIP server's certificate names its domain in
# subjectAltName DNS, which is what a TLS client checks).
#
# Writes into DIR (default: var/pki under the current directory):
#   ca.crt ca.key             the lab CA (give ca.crt to clients, and to --tls-ca)
#   a.lab.crt a.lab.key       server cert: DNS:a.lab + the a.lab IPs (serverAuth, clientAuth)
#   b.lab.crt b.lab.key       server cert: DNS:b.lab + the b.lab IPs
#   client.crt client.key     a client cert (clientAuth) for proxies run with --tls-ca
#
# Idempotent: existing files are kept, only missing ones are made (a new leaf is signed
# by the existing CA). Delete DIR to start over. Keys are EC P-256, mode 600.
set -euo pipefail

usage() {
    cat <<EOF
Usage: $(basename "$0") [-h] [DIR]

Create a lab CA and TLS certificates for a.lab, b.lab and a client in DIR
(default: var/pki). Existing files are kept; delete DIR to start over.

Environment:
  A_IPS   IP addresses in the a.lab certificate (default: "127.0.0.1 127.0.0.2")
  B_IPS   IP addresses in the b.lab certificate (default: "127.0.0.1 127.0.0.3")
  DAYS    validity of the leaf certificates in days (default: 825)

Then, for example:
  twistd -n sipproxy --domain a.lab --tls-port 5061 \\
      --tls-cert DIR/a.lab.crt --tls-key DIR/a.lab.key [--tls-ca DIR/ca.crt]
EOF
}

DIR=""
for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        -*) echo "$(basename "$0"): unknown option $arg" >&2; usage >&2; exit 2 ;;
        *)
            if [ -n "$DIR" ]; then
                echo "$(basename "$0"): only one DIR, got '$DIR' and '$arg'" >&2
                usage >&2
                exit 2
            fi
            DIR="$arg"
            ;;
    esac
done
DIR="${DIR:-var/pki}"
A_IPS="${A_IPS:-127.0.0.1 127.0.0.2}"
B_IPS="${B_IPS:-127.0.0.1 127.0.0.3}"
DAYS="${DAYS:-825}"

if ! command -v openssl >/dev/null 2>&1; then
    echo "$(basename "$0"): openssl not found (Debian package: openssl)" >&2
    exit 1
fi

mkdir -p "$DIR"
umask 077  # keys, and the temporary CSRs, are for our eyes only
cd "$DIR"

new_key() {  # new_key FILE: an EC P-256 key, unless FILE exists
    [ -s "$1" ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

serial() {  # a random positive 128-bit serial (RFC 5280 §4.1.2.2: unique per CA)
    echo "0x$(openssl rand -hex 16 | sed 's/^./4/')"
}

made=()

if [ ! -s ca.crt ]; then
    new_key ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -set_serial "$(serial)" \
        -subj "/O=sipcalling lab/CN=sipcalling lab CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out ca.crt
    made+=(ca.crt)
fi

leaf() {  # leaf NAME CN SAN EKU
    local name="$1" cn="$2" san="$3" eku="$4"
    [ -s "$name.crt" ] && return 0
    new_key "$name.key"
    local ext csr
    ext="$(mktemp ./.ext.XXXXXX)"
    csr="$(mktemp ./.csr.XXXXXX)"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyAgreement"
        echo "extendedKeyUsage=$eku"
        echo "subjectKeyIdentifier=hash"
        echo "authorityKeyIdentifier=keyid"
        if [ -n "$san" ]; then echo "subjectAltName=$san"; fi
    } >"$ext"
    openssl req -new -key "$name.key" -subj "/O=sipcalling lab/CN=$cn" -out "$csr"
    openssl x509 -req -in "$csr" -CA ca.crt -CAkey ca.key -set_serial "$(serial)" \
        -sha256 -days "$DAYS" -extfile "$ext" -out "$name.crt" 2>/dev/null
    rm -f "$ext" "$csr"
    made+=("$name.crt")
}

san_for() {  # san_for DOMAIN IPS...: DNS:DOMAIN,IP:...
    local domain="$1"
    shift
    local san="DNS:$domain"
    for ip in "$@"; do san="$san,IP:$ip"; done
    echo "$san"
}

# Servers also get clientAuth: a proxy forwarding over TLS to a peer that runs with
# --tls-ca presents its server certificate as a client certificate.
# shellcheck disable=SC2086  # A_IPS/B_IPS are space-separated lists on purpose
leaf a.lab a.lab "$(san_for a.lab $A_IPS)" "serverAuth,clientAuth"
# shellcheck disable=SC2086
leaf b.lab b.lab "$(san_for b.lab $B_IPS)" "serverAuth,clientAuth"
leaf client lab-client "" "clientAuth"

chmod 600 ./*.key
chmod 644 ./*.crt
if [ ${#made[@]} -eq 0 ]; then
    echo "lab PKI in $DIR is complete; nothing to do"
else
    echo "lab PKI in $DIR: made ${made[*]}"
fi
