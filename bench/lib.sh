# Shared by the bench scripts (sourced after they `cd` to the project root).

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Installs a Debian package unless its command is already there: need COMMAND [PACKAGE].
need() {
  command -v "$1" >/dev/null && return
  apt-get install -y -qq "${2:-$1}" >/dev/null 2>&1 || sudo apt-get install -y -qq "${2:-$1}"
}

# The release binary to measure: the path given (a build kept aside, measured as it is), or
# the project's, built now. Usage: bin=$(release_cedar "${SOME_BIN:-}")
release_cedar() {
  if [ -n "${1:-}" ]; then
    echo "$1"
  else
    cargo build --release --locked --quiet --bin cedar >&2 || return 1
    echo "$(pwd)/${CARGO_TARGET_DIR:-target}/release/cedar"
  fi
}
