#!/usr/bin/env bash
# Start, stop or inspect forrestq workers on a list of hosts over ssh.
#
#   export FORRESTQ_URL=redis://:PASSWORD@server.example:6379/0   # every host uses this
#   export FORRESTQ_SECRET=...                                    # optional, signs payloads
#   workers/launch.sh hosts.txt                     # start one worker per host
#   workers/launch.sh --queue fits hosts.txt -- --autokill 3600 --max-memory 4G
#   workers/launch.sh --status hosts.txt
#   workers/launch.sh --stop hosts.txt              # SIGTERM: warm stop, tasks handed back
#   workers/launch.sh --dry-run hosts.txt           # print the ssh commands, run nothing
#
# HOSTS_FILE: one host per line, `host [procs]`; `#` starts a comment; blank lines are
# ignored. host is anything ssh accepts (alias from ~/.ssh/config, user@host, address).
# Without procs the remote host's CPU count is used (see --procs).
#
# Secrets never appear on a command line (local or remote `ps`): FORRESTQ_URL and
# FORRESTQ_SECRET travel on ssh's standard input, together with the small remote script,
# and reach the worker only through its environment. On each host the worker runs detached
# (setsid + nohup) with its output in ~/.forrestq/worker-QUEUE.log and its pid in
# ~/.forrestq/worker-QUEUE.pid (directory mode 700, files 600). Requirements per host:
# bash, and `forrestq` installed (`pip install .` from the repository, or see --forrestq).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: launch.sh [options] HOSTS_FILE [-- extra forrestq worker args]

  (default)          start a worker on every host of HOSTS_FILE
  --stop             send SIGTERM to the workers (warm stop: running tasks get --grace
                     seconds to finish, then are handed back to the queue)
  --status           show whether each host's worker runs, and its log's last line
  --dry-run          print the ssh command per host and run nothing
  -q, --queue Q      queue to serve (repeatable; default: the worker's default queue);
                     also names the log and pid files: worker-Q.log / worker-Q.pid
  --procs N          processes per worker for hosts whose line has no count
                     (default: auto = the remote host's CPU count)
  --forrestq CMD     the forrestq executable on the remote hosts (default: forrestq),
                     e.g. /opt/forrestq/venv/bin/forrestq
  -h, --help         this help

Environment: FORRESTQ_URL (required: the server every worker connects to),
FORRESTQ_SECRET (optional HMAC key), SSH (ssh command, default: ssh).
EOF
}

die() {
    printf 'launch.sh: %s\n' "$*" >&2
    exit 2
}

# POSIX single-quoting, so the remote login shell (sh, bash, zsh, ...) reads each word back
# unchanged. Plain words are left as they are for readability. (A loop rather than
# ${s//.../...}, whose quote handling differs between bash versions.)
shquote() {
    local s=$1 out=""
    if [[ -n $s && $s =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
        printf '%s' "$s"
        return
    fi
    while [[ $s == *\'* ]]; do
        out+="${s%%\'*}'\\''"
        s=${s#*\'}
    done
    printf "'%s%s'" "$out" "$s"
}

# --- the part that runs on each remote host (sent on stdin; shellcheck checks it here) ----
# Arguments: ACTION LABEL PROCS FORRESTQ [extra worker args...]
remote_main() {
    local action=$1 label=$2 procs=$3 fq=$4
    shift 4
    local dir="$HOME/.forrestq"
    local pidf="$dir/worker-$label.pid" logf="$dir/worker-$label.log"
    local host pid old_umask
    host=$(uname -n)
    # Private directory and files; the worker itself gets the login's usual umask back.
    old_umask=$(umask)
    umask 077
    mkdir -p "$dir"
    chmod 700 "$dir"

    # The pid in the pid file, if that process is alive and is a forrestq worker.
    running_pid() {
        local p
        [[ -s $pidf ]] || return 1
        p=$(<"$pidf")
        [[ $p =~ ^[0-9]+$ ]] || return 1
        kill -0 "$p" 2>/dev/null || return 1
        # (not a recycled pid now used by something else)
        ps -o args= -p "$p" 2>/dev/null | grep -q -e ' worker --procs ' || return 1
        printf '%s\n' "$p"
    }

    case $action in
    start)
        if pid=$(running_pid); then
            echo "$host: already running (pid $pid, log $logf)"
            return 0
        fi
        if ! command -v "$fq" >/dev/null 2>&1; then
            echo "$host: '$fq' not found on PATH ($PATH); install forrestq or use --forrestq" >&2
            return 127
        fi
        if [[ $procs == auto ]]; then
            procs=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)
        fi
        printf '\n=== %s starting: %s worker --procs %s %s\n' \
            "$(date '+%Y-%m-%d %H:%M:%S')" "$fq" "$procs" "$*" >>"$logf"
        : >"$pidf"
        umask "$old_umask"
        # setsid: own session, so the worker outlives the ssh connection and its terminal.
        # A background job of this non-interactive shell is no process-group leader, so
        # setsid does not fork and $! is the worker's pid (setsid and nohup both exec).
        if command -v setsid >/dev/null 2>&1; then
            setsid nohup "$fq" worker --procs "$procs" "$@" </dev/null >>"$logf" 2>&1 &
        else
            nohup "$fq" worker --procs "$procs" "$@" </dev/null >>"$logf" 2>&1 &
        fi
        pid=$!
        printf '%s\n' "$pid" >"$pidf"
        # Catch the immediate failures (bad flag, unreachable server, wrong password).
        sleep 2
        if kill -0 "$pid" 2>/dev/null; then
            echo "$host: started pid $pid, $procs procs, log $logf"
        else
            echo "$host: worker exited at once; end of $logf:" >&2
            tail -n 5 "$logf" >&2
            rm -f "$pidf"
            return 1
        fi
        ;;
    stop)
        if pid=$(running_pid); then
            kill -TERM "$pid"
            echo "$host: sent SIGTERM to pid $pid (warm stop; see $logf)"
        else
            echo "$host: not running"
            rm -f "$pidf"
        fi
        ;;
    status)
        if pid=$(running_pid); then
            echo "$host: running pid $pid for $(ps -o etime= -p "$pid" | tr -d ' '), log $logf"
            if [[ -s $logf ]]; then
                echo "$host:   $(tail -n 1 "$logf")"
            fi
        else
            echo "$host: not running"
            return 3
        fi
        ;;
    *)
        echo "unknown action $action" >&2
        return 2
        ;;
    esac
}
# ------------------------------------------------------------------------------------------

main() {
    local action=start dry_run=0 default_procs=auto fq=forrestq hosts_file=""
    local queues=() extra=()
    while (($#)); do
        case $1 in
        --stop) action=stop ;;
        --status) action=status ;;
        --dry-run | -n) dry_run=1 ;;
        -q | --queue)
            (($# >= 2)) || die "$1 needs a queue name"
            queues+=("$2")
            shift
            ;;
        --queue=*) queues+=("${1#--queue=}") ;;
        --procs)
            (($# >= 2)) || die "--procs needs a number"
            default_procs=$2
            shift
            ;;
        --procs=*) default_procs=${1#--procs=} ;;
        --forrestq)
            (($# >= 2)) || die "--forrestq needs a command"
            fq=$2
            shift
            ;;
        --forrestq=*) fq=${1#--forrestq=} ;;
        -h | --help)
            usage
            return 0
            ;;
        --)
            shift
            extra=("$@")
            break
            ;;
        -*) die "unknown option $1 (worker flags go after --; see --help)" ;;
        *)
            [[ -z $hosts_file ]] || die "only one HOSTS_FILE, got '$hosts_file' and '$1'"
            hosts_file=$1
            ;;
        esac
        shift
    done

    [[ -n $hosts_file ]] || {
        usage >&2
        exit 2
    }
    [[ -r $hosts_file ]] || die "cannot read hosts file '$hosts_file'"
    [[ $default_procs == auto || $default_procs =~ ^[1-9][0-9]*$ ]] ||
        die "--procs must be a positive number or auto, not '$default_procs'"
    [[ -n $fq && $fq != -* ]] || die "bad --forrestq '$fq'"

    # ${a[@]+"${a[@]}"}: an empty array under `set -u` in bash < 4.4 (macOS ships 3.2).
    local q
    for q in ${queues[@]+"${queues[@]}"}; do
        [[ $q =~ ^[A-Za-z0-9._-]+$ ]] ||
            die "queue name '$q' may only use letters, digits, '.', '_' and '-'"
    done
    local a
    for a in ${extra[@]+"${extra[@]}"}; do
        case $a in
        --url | --url=*)
            die "do not pass --url: it would put the password on the remote command line; export FORRESTQ_URL instead" ;;
        --queue | --queue=* | --procs | --procs=*)
            die "give $a to launch.sh itself (before --), not to the worker" ;;
        esac
    done

    # Names of this worker's log and pid files on the remote hosts.
    local label=default
    if ((${#queues[@]})); then
        label=$(IFS=+; printf '%s' "${queues[*]}")
    fi
    local worker_args=()
    for q in ${queues[@]+"${queues[@]}"}; do
        worker_args+=(--queue "$q")
    done
    worker_args+=(${extra[@]+"${extra[@]}"})

    if [[ $action == start ]]; then
        [[ -n ${FORRESTQ_URL:-} ]] ||
            die "FORRESTQ_URL is not set: every host needs the URL of the one shared server (see workers/README.md)"
        case $FORRESTQ_URL in
        *://localhost* | *://127.* | *://\[::1\]* | *@localhost* | *@127.* | *@\[::1\]*)
            printf 'launch.sh: warning: FORRESTQ_URL points at localhost, which on each remote host is that host itself\n' >&2 ;;
        esac
    fi

    # Read the whole hosts file first: ssh must not consume it as its standard input.
    local hosts=() procs_of=() lineno=0 line host procs rest
    while IFS= read -r line || [[ -n $line ]]; do
        lineno=$((lineno + 1))
        line=${line%$'\r'} # files edited on Windows
        line=${line%%#*}
        read -r host procs rest <<<"$line" || true
        [[ -n ${host:-} ]] || continue
        [[ -z ${rest:-} ]] || die "$hosts_file:$lineno: expected 'host [procs]', got '$line'"
        [[ $host != -* && $host =~ ^[A-Za-z0-9._@:%-]+$ ]] ||
            die "$hosts_file:$lineno: bad host name '$host'"
        if [[ -n ${procs:-} ]]; then
            [[ $procs =~ ^[1-9][0-9]*$ ]] ||
                die "$hosts_file:$lineno: procs must be a positive number, not '$procs'"
        else
            procs=$default_procs
        fi
        hosts+=("$host")
        procs_of+=("$procs")
    done <"$hosts_file"
    ((${#hosts[@]})) || die "no hosts in '$hosts_file'"

    local ssh_cmd=()
    read -r -a ssh_cmd <<<"${SSH:-ssh}"
    # BatchMode: fail instead of prompting for a password; -T: no terminal.
    ssh_cmd+=(-o BatchMode=yes -o ConnectTimeout=10 -T)

    # The remote side: bash reads the script (and the secrets) from stdin; the arguments
    # are only the action, the file label, procs, the executable and the worker flags.
    local script i remote word failed=0
    script="set -eu"$'\n'"$(declare -f remote_main)"$'\n'"remote_main \"\$@\""$'\n'
    for i in "${!hosts[@]}"; do
        host=${hosts[i]}
        remote="bash -s --"
        for word in "$action" "$label" "${procs_of[i]}" "$fq" ${worker_args[@]+"${worker_args[@]}"}; do
            remote+=" $(shquote "$word")"
        done
        if ((dry_run)); then
            local shown=""
            for word in "${ssh_cmd[@]}" "$host" "$remote"; do
                shown+="${shown:+ }$(shquote "$word")"
            done
            printf '%s\n' "$shown"
            continue
        fi
        if ! remote_input "$action" "$script" | "${ssh_cmd[@]}" "$host" "$remote"; then
            failed=$((failed + 1))
            if [[ $action == status ]]; then
                printf 'launch.sh: %s: not running or unreachable\n' "$host" >&2
            else
                printf 'launch.sh: %s: %s failed\n' "$host" "$action" >&2
            fi
        fi
    done
    if ((dry_run)); then
        printf 'launch.sh: dry run: nothing was run; each command gets the remote script%s on stdin\n' \
            "$([[ $action == start ]] && printf ' and FORRESTQ_URL/FORRESTQ_SECRET')" >&2
    fi
    if ((failed)); then
        printf 'launch.sh: %d of %d hosts failed\n' "$failed" "${#hosts[@]}" >&2
        return 1
    fi
}

# What ssh sends on stdin: the secrets (start only) as shell assignments, then the script.
# printf is a bash builtin, so the values never show up in any process's argv.
remote_input() {
    local action=$1 script=$2
    if [[ $action == start ]]; then
        printf 'FORRESTQ_URL=%s\nexport FORRESTQ_URL\n' "$(shquote "$FORRESTQ_URL")"
        if [[ -n ${FORRESTQ_SECRET:-} ]]; then
            printf 'FORRESTQ_SECRET=%s\nexport FORRESTQ_SECRET\n' "$(shquote "$FORRESTQ_SECRET")"
        else
            printf 'unset FORRESTQ_SECRET\n'
        fi
    fi
    printf '%s' "$script"
}

main "$@"
