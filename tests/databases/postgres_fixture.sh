#!/bin/sh
# Starts (setup) or stops (cleanup) a throwaway PostgreSQL server for the postgres.* tests.
#   postgres_fixture.sh setup   DIR   initdb into a fresh directory under ${TMPDIR:-/tmp} (its
#                                     path goes to DIR/datadir: as root the server runs as the
#                                     `postgres` user, who may not reach DIR's parents), start on
#                                     127.0.0.1 at a free port, write the libpq connection string
#                                     to DIR/conninfo
#   postgres_fixture.sh restart DIR   pg_ctl restart (the restart test calls it mid-run)
#   postgres_fixture.sh cleanup DIR   stop the server and remove DIR
# initdb refuses to run as root: as root, the server runs as the `postgres` system user.
set -eu
action=$1
dir=$2
case "$dir" in
  /*) ;;
  *) dir="$PWD/$dir" ;;
esac
cd /  # the server's user may not be able to enter the caller's directory

bindir=""
for candidate in "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin /usr/local/bin; do
  if [ -n "$candidate" ] && [ -x "$candidate/initdb" ] && [ -x "$candidate/pg_ctl" ]; then
    bindir=$candidate
    break
  fi
done
if [ -z "$bindir" ]; then
  echo "postgres_fixture: initdb/pg_ctl not found (install postgresql)" >&2
  exit 1
fi

as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

stop_server() {
  if [ -f "$dir/datadir" ]; then
    data=$(cat "$dir/datadir")
    if [ -f "$data/data/postmaster.pid" ]; then
      as_owner "$bindir/pg_ctl" -D "$data/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$data"
  fi
  rm -rf "$dir"
}

case "$action" in
  setup)
    stop_server  # a server left by an interrupted run
    mkdir -p "$dir"
    data=$(mktemp -d "${TMPDIR:-/tmp}/bulwark-pg.XXXXXX")
    chmod 755 "$data"
    echo "$data" >"$dir/datadir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$data"; fi
    as_owner "$bindir/initdb" -D "$data/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >>"$data/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
fsync = on
synchronous_commit = on
max_connections = 100
shared_buffers = 64MB
CONF
    as_owner "$bindir/pg_ctl" -D "$data/data" -l "$data/server.log" -w -t 60 start >/dev/null ||
      { cat "$data/server.log" >&2; exit 1; }
    echo "host=127.0.0.1 port=$port user=postgres dbname=postgres connect_timeout=5" >"$dir/conninfo"
    echo "postgres_fixture: server on 127.0.0.1:$port ($bindir)"
    ;;
  restart)
    data=$(cat "$dir/datadir")
    as_owner "$bindir/pg_ctl" -D "$data/data" -l "$data/server.log" -w -t 60 -m fast restart >/dev/null
    ;;
  cleanup)
    stop_server
    ;;
  *)
    echo "usage: $0 setup|restart|cleanup DIR" >&2
    exit 2
    ;;
esac
