#!/usr/bin/env bash
# A self-signed certificate for local TLS testing (not for production: use your CA's).
#   deploy/tls/make-cert.sh [OUT_DIR] [HOSTNAME]     -> OUT_DIR/server.crt, OUT_DIR/server.key
# The certificate is valid for HOSTNAME (default localhost), localhost and 127.0.0.1, for
# 30 days; clients trust it by using server.crt as their root certificate.
set -euo pipefail
out="${1:-$(dirname "$0")}"
host="${2:-localhost}"
mkdir -p "$out"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj "/CN=${host}" \
  -addext "subjectAltName=DNS:${host},DNS:localhost,IP:127.0.0.1" \
  -addext "keyUsage=digitalSignature" -addext "extendedKeyUsage=serverAuth" \
  -keyout "$out/server.key" -out "$out/server.crt" 2>/dev/null
chmod 644 "$out/server.crt"
echo "wrote $out/server.crt and $out/server.key (CN=${host}, 30 days)"
