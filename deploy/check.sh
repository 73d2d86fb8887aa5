#!/usr/bin/env bash
# Checks the deployment without Docker: the compose file with Compose's own `config`, the
# alert rules with `promtool check rules` and their unit tests, Prometheus's config, the nginx
# config with `nginx -t`, then runs the compose topology on loopback — PostgreSQL,
# `cedar serve --no-worker`, `cedar worker`, nginx terminating TLS — and passes requests
# through the proxy. Installs what it needs from Debian's packages. Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

need=()
for pair in nginx:nginx-light promtool:prometheus docker-compose:docker-compose openssl:openssl curl:curl; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]} (Debian packages)"
    sudo_if() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    sudo_if apt-get update -qq
    DEBIAN_FRONTEND=noninteractive sudo_if apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
pids=()
db=""
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    if [ -n "$db" ]; then psql "$TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$work"/*.log; do echo "--- $f"; tail -n 20 "$f"; done >&2; exit 1; }

echo "== docker-compose config"
cp -r deploy "$work/deploy"
cp deploy/env.example "$work/deploy/.env"
docker-compose -f "$work/deploy/compose.yaml" --env-file "$work/deploy/.env" config -q

echo "== promtool"
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts_test.yml)
echo "metrics-token" > "$work/metrics_token"
sed -e "s#/etc/prometheus/alerts.yml#$root/deploy/prometheus/alerts.yml#" \
    -e "s#/etc/prometheus/metrics_token#$work/metrics_token#" deploy/prometheus/prometheus.yml > "$work/prometheus.yml"
promtool check config "$work/prometheus.yml"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api=$(port); http=$(port); https=$(port)

echo "== nginx -t (the compose config with loopback upstream and a self-signed certificate)"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=localhost" \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
mkdir -p "$work/acme" "$work/tmp"
sed -e "s#http://cedar:8000#http://127.0.0.1:$api#" \
    -e 's#${CEDAR_DOMAIN}#localhost#g' \
    -e "s#/etc/letsencrypt/live/localhost/fullchain.pem#$work/cert.pem#" \
    -e "s#/etc/letsencrypt/live/localhost/privkey.pem#$work/key.pem#" \
    -e "s#/var/www/acme#$work/acme#" \
    -e "s#listen 80;#listen 127.0.0.1:$http;#" -e "s#listen 443 ssl http2;#listen 127.0.0.1:$https ssl http2;#" \
    -e '/listen \[::\]/d' deploy/nginx/cedar.conf.template > "$work/cedar.conf"
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events {}
http {
    access_log $work/nginx-access.log;
    client_body_temp_path $work/tmp/body;
    proxy_temp_path $work/tmp/proxy;
    fastcgi_temp_path $work/tmp/fastcgi;
    uwsgi_temp_path $work/tmp/uwsgi;
    scgi_temp_path $work/tmp/scgi;
    include $work/cedar.conf;
}
NGINX
nginx -t -q -c "$work/nginx.conf" -e "$work/nginx-error.log" || fail "nginx -t"

echo "== topology: PostgreSQL, cedar serve --no-worker, cedar worker, nginx with TLS"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
cedar="${CEDAR_BIN:-$root/target/debug/cedar}"
[ -x "$cedar" ] || cargo build --locked --bin cedar
db="cedar_topology_$$"
psql "$TEST_DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
export DATABASE_URL="${TEST_DATABASE_URL%/*}/$db"
export CEDAR_DATA_DIR="$work/data" CEDAR_METRICS_TOKEN=metrics-token CEDAR_PUBLIC_URL="https://localhost:$https"
export CEDAR_TRUSTED_PROXIES=127.0.0.1 CEDAR_LOG_FORMAT=json
"$cedar" migrate >/dev/null
"$cedar" admin create --email owner@cedarheights.example --password 'topology-owner-pw' >/dev/null
"$cedar" serve --no-worker --addr "127.0.0.1:$api" >"$work/serve.log" 2>&1 & pids+=($!)
"$cedar" worker >"$work/worker.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do "$cedar" healthcheck --url "http://127.0.0.1:$api/ready" 2>/dev/null && break; sleep 0.1; done
"$cedar" healthcheck --url "http://127.0.0.1:$api/ready" || fail "cedar serve is not ready"
nginx -c "$work/nginx.conf" -e "$work/nginx-error.log" || fail "nginx did not start"

through() { curl -sk --max-time 10 "$@"; }
base="https://localhost:$https"
resolve=(--resolve "localhost:$https:127.0.0.1" --resolve "localhost:$http:127.0.0.1")
code() { through "${resolve[@]}" -o /dev/null -w '%{http_code}' "$@"; }

[ "$(code "http://localhost:$http/health")" = 301 ] || fail "plain HTTP is not redirected to HTTPS"
headers=$(through "${resolve[@]}" -D - -o /dev/null "$base/ready")
grep -qi '^HTTP/2 200' <<<"$headers" || fail "/ready through the proxy: $headers"
grep -qi '^strict-transport-security: max-age=31536000; includeSubDomains' <<<"$headers" || fail "no HSTS from the proxy"
grep -qi '^x-content-type-options: nosniff' <<<"$headers" || fail "no nosniff"
[ "$(code "$base/metrics")" = 404 ] || fail "/metrics is reachable through the proxy"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$api/metrics")" = 401 ] || fail "/metrics without the token"
curl -sf -H "Authorization: Bearer metrics-token" "http://127.0.0.1:$api/metrics" | grep -q '^cedar_ready 1' || fail "/metrics with the token"
head -c 3000000 /dev/zero | tr '\0' a > "$work/big.json"
[ "$(code -X POST -H 'content-type: application/json' --data-binary @"$work/big.json" "$base/v1/families")" = 413 ] || fail "a 3 MB body was not refused"
token=$(through "${resolve[@]}" -X POST -H 'content-type: application/json' \
    -d '{"email":"owner@cedarheights.example","password":"topology-owner-pw"}' \
    "$base/auth/v1/token?grant_type=password" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])') \
    || fail "sign-in through the proxy"
through "${resolve[@]}" -H "Authorization: Bearer $token" "$base/v1/me" | grep -q '"role":"admin"' || fail "/v1/me through the proxy"
# A sign-up queues its confirmation email; only the worker process delivers it.
[ "$(code -X POST -H 'content-type: application/json' -d '{"email":"parent@example.ca","password":"topology-parent-pw"}' \
    "$base/auth/v1/signup")" = 200 ] || fail "sign-up through the proxy"
for _ in $(seq 1 100); do ls "$work/data/outbox"/*.eml >/dev/null 2>&1 && break; sleep 0.1; done
ls "$work/data/outbox"/*.eml >/dev/null 2>&1 || fail "the worker did not deliver the confirmation email"
grep -q "parent@example.ca" "$work"/data/outbox/*.eml || fail "the email is not the sign-up's"
echo "deploy/check.sh: compose, promtool, nginx -t and the loopback topology all pass"
