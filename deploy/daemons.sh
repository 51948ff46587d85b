# Shared by deploy/lab/lab.sh and deploy/scaleout/scaleout.sh (sourced, not run):
# start twistd daemons with a PID file each under $VAR, stop exactly those PIDs.
# The caller sets ROOT (the repository), VAR (PID/log folder) and TWISTD.

running() { [ -f "$VAR/$1.pid" ] && kill -0 "$(cat "$VAR/$1.pid")" 2>/dev/null; }

start_twistd() {  # name, then twistd plugin arguments
    name=$1; shift
    if running "$name"; then echo "$name already running (pid $(cat "$VAR/$name.pid"))"; return; fi
    (cd "$VAR" && "$TWISTD" --pidfile="$VAR/$name.pid" --logfile="$VAR/$name.log" "$@")
    echo "$name started (pid $(cat "$VAR/$name.pid"), log ${VAR#"$ROOT"/}/$name.log)"
}

stop() {
    name=$1
    if [ -f "$VAR/$name.pid" ]; then
        pid=$(cat "$VAR/$name.pid")
        kill "$pid" 2>/dev/null && echo "$name stopped (pid $pid)" || echo "$name was not running"
        rm -f "$VAR/$name.pid"
    fi
}

status() {  # names
    for name in "$@"; do
        if running "$name"; then echo "$name running (pid $(cat "$VAR/$name.pid"))"
        else echo "$name stopped"; fi
    done
}
