#!/usr/bin/env bash
# Entry point of the hwd-tune image: turns environment variables into the command line of a
# Ray head, a Ray worker or the MLflow server, so docker/compose.yaml holds no command lines.
#
#   hwd-entrypoint [--dry-run] head | worker | mlflow | healthcheck | <any command> [args...]
#
# --dry-run (or HWD_ENTRYPOINT_DRY_RUN=1) prints what would run instead of running it:
# one `export NAME=value` line per variable the script sets (secrets masked) and one
# `exec ...` line, shell-quoted. Missing or placeholder settings fail with exit status 2
# (1 in `healthcheck`, the status Docker reads as "unhealthy").
set -euo pipefail

readonly PLACEHOLDER_PREFIX="CHANGE_ME"
readonly STATE_DIR="${HWD_STATE_DIR:-/tmp}"
readonly ROLE_FILE="$STATE_DIR/hwd-entrypoint.role"

dry_run=false
if [[ "${HWD_ENTRYPOINT_DRY_RUN:-0}" == "1" ]]; then
    dry_run=true
fi
if [[ "${1:-}" == "--dry-run" ]]; then
    dry_run=true
    shift
fi

error_status=2
die() {
    echo "hwd-entrypoint: error: $*" >&2
    exit "$error_status"
}

usage() {
    cat >&2 <<'EOF'
usage: hwd-entrypoint [--dry-run] head | worker | mlflow | healthcheck | <command> [args...]
  head         Ray head node (GCS, dashboard and job server, Ray client server)
  worker       Ray worker node joining RAY_HEAD_ADDRESS
  mlflow       MLflow tracking server (Postgres backend store, proxied artifact store)
  healthcheck  probe the role this container was started with (used by HEALTHCHECK)
  <command>    run any other command as is, e.g. hwd-tune sweep search_spaces/x.yaml
EOF
}

# require_env NAME HINT: the value of NAME, or exit naming NAME and what it should hold.
require_env() {
    local name=$1 hint=$2
    if [[ -z "${!name:-}" ]]; then
        die "$name is not set: $hint"
    fi
}

# require_secret NAME HINT: like require_env, and refuses the placeholders of .env.example.
require_secret() {
    local name=$1 hint=$2
    require_env "$name" "$hint"
    if [[ "${!name}" == "$PLACEHOLDER_PREFIX"* ]]; then
        die "$name still holds the placeholder from docker/.env.example; put a real secret in docker/.env ($hint)"
    fi
}

# require_port NAME DEFAULT: sets NAME to its value or DEFAULT, checked to be a TCP port.
require_port() {
    local name=$1 default=$2
    local value="${!name:-$default}"
    if ! [[ "$value" =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
        die "$name must be a TCP port between 1 and 65535, got '$value'"
    fi
    printf -v "$name" '%s' "$value"
}

# optional_count NAME: checks that NAME, if set, is a whole number.
optional_count() {
    local name=$1
    if [[ -n "${!name:-}" ]] && ! [[ "${!name}" =~ ^[0-9]+$ ]]; then
        die "$name must be a whole number, got '${!name}'"
    fi
}

# shell_quote WORD: WORD as is when it is plain, else in single quotes (readable, re-parsable).
shell_quote() {
    if [[ "$1" =~ ^[A-Za-z0-9_./:=,@+%-]+$ ]]; then
        printf '%s' "$1"
    else
        printf "'%s'" "${1//\'/\'\\\'\'}"
    fi
}

# set_env NAME VALUE [masked]: exports NAME; in a dry run prints it, masked if asked.
set_env() {
    local name=$1 value=$2 shown=${3:-$2}
    export "$name=$value"
    if $dry_run; then
        printf 'export %s=%s\n' "$name" "$(shell_quote "$shown")"
    fi
}

# launch ROLE COMMAND...: records the role for `healthcheck`, then replaces this process.
launch() {
    local role=$1
    shift
    if $dry_run; then
        printf 'exec'
        local word
        for word in "$@"; do
            printf ' %s' "$(shell_quote "$word")"
        done
        printf '\n'
        exit 0
    fi
    if [[ -n "$role" ]]; then
        mkdir -p "$STATE_DIR"
        printf '%s\n' "$role" >"$ROLE_FILE"
    fi
    exec "$@"
}

# Ray token authentication: on unless RAY_AUTH_MODE=disabled is set explicitly.
configure_ray_auth() {
    local mode="${RAY_AUTH_MODE:-token}"
    case "$mode" in
        token)
            require_secret RAY_AUTH_TOKEN \
                "the shared Ray cluster token; generate one with: python3 -c 'import secrets; print(secrets.token_hex(32))'"
            set_env RAY_AUTH_MODE token
            ;;
        disabled)
            echo "hwd-entrypoint: warning: RAY_AUTH_MODE=disabled: anyone who reaches the Ray ports can run code here; use only on a private network" >&2
            set_env RAY_AUTH_MODE disabled
            ;;
        *)
            die "RAY_AUTH_MODE must be 'token' or 'disabled', got '$mode'"
            ;;
    esac
}

# Common `ray start` options of head and worker nodes from RAY_NUM_CPUS, RAY_OBJECT_STORE_MEMORY
# and RAY_NODE_IP_ADDRESS (the address other nodes reach this one at; Ray guesses it when unset).
ray_resource_args=()
collect_ray_resource_args() {
    optional_count RAY_NUM_CPUS
    optional_count RAY_OBJECT_STORE_MEMORY
    ray_resource_args=()
    if [[ -n "${RAY_NODE_IP_ADDRESS:-}" ]]; then
        if ! [[ "$RAY_NODE_IP_ADDRESS" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
            die "RAY_NODE_IP_ADDRESS must be an IPv4 address, got '$RAY_NODE_IP_ADDRESS'"
        fi
        ray_resource_args+=("--node-ip-address=$RAY_NODE_IP_ADDRESS")
    fi
    if [[ -n "${RAY_NUM_CPUS:-}" ]]; then
        ray_resource_args+=("--num-cpus=$RAY_NUM_CPUS")
    fi
    if [[ -n "${RAY_OBJECT_STORE_MEMORY:-}" ]]; then
        ray_resource_args+=("--object-store-memory=$RAY_OBJECT_STORE_MEMORY")
    fi
}

start_head() {
    require_port RAY_GCS_PORT 6379
    require_port RAY_DASHBOARD_PORT 8265
    require_port RAY_CLIENT_PORT 10001
    require_port RAY_AGENT_PORT 52365
    optional_count RAY_HEAD_NUM_GPUS
    collect_ray_resource_args
    configure_ray_auth
    # The dashboard listens on every interface inside the container; which host interface
    # publishes it is decided by compose.yaml (127.0.0.1 unless HWD_BIND says otherwise).
    launch head ray start --head --block \
        "--port=$RAY_GCS_PORT" \
        "--dashboard-host=${RAY_DASHBOARD_HOST:-0.0.0.0}" \
        "--dashboard-port=$RAY_DASHBOARD_PORT" \
        "--ray-client-server-port=$RAY_CLIENT_PORT" \
        "--dashboard-agent-listen-port=$RAY_AGENT_PORT" \
        "--num-gpus=${RAY_HEAD_NUM_GPUS:-0}" \
        --disable-usage-stats \
        "${ray_resource_args[@]}"
}

# claim_gpu_slot PER_WORKER: locks the first free group of PER_WORKER GPUs for this container.
# Docker gives every replica of a `count: N` reservation GPUs 0..N-1, so replicas started with
# --scale would share them; instead each worker sees all GPUs and holds a flock on one slot
# file in a volume shared by the workers, for as long as its `ray start` process lives.
claim_gpu_slot() {
    local per_worker=$1
    local dev_dir="${HWD_DEV_DIR:-/dev}" slot_dir="${HWD_GPU_SLOT_DIR:-/var/lib/hwd-gpu-slots}"
    local gpu_count slot_count slot fd first ids
    gpu_count=$(find "$dev_dir" -maxdepth 1 -regex '.*/nvidia[0-9]+' 2>/dev/null | wc -l || true)
    if ((gpu_count == 0)); then
        die "HWD_GPUS_PER_WORKER=$per_worker but no GPU is visible ($dev_dir/nvidia0 is missing); start the worker with a GPU reservation or set HWD_GPUS_PER_WORKER= (empty) for a CPU worker"
    fi
    if ((per_worker > gpu_count)); then
        die "HWD_GPUS_PER_WORKER=$per_worker is more than the $gpu_count GPU(s) visible"
    fi
    slot_count=$((gpu_count / per_worker))
    mkdir -p "$slot_dir" 2>/dev/null || true
    if [[ ! -d "$slot_dir" || ! -w "$slot_dir" ]]; then
        die "HWD_GPU_SLOT_DIR=$slot_dir is not a writable directory; the workers share GPU slots through it"
    fi
    for ((slot = 0; slot < slot_count; slot++)); do
        exec {fd}>"$slot_dir/slot-$slot"
        if flock --nonblock "$fd"; then
            first=$((slot * per_worker))
            ids=$(seq -s, "$first" $((first + per_worker - 1)))
            set_env CUDA_DEVICE_ORDER PCI_BUS_ID
            set_env CUDA_VISIBLE_DEVICES "$ids"
            return 0
        fi
        exec {fd}>&-
    done
    die "all $slot_count GPU slot(s) of $per_worker GPU(s) are held by other workers; lower --scale ray-worker or HWD_GPUS_PER_WORKER"
}

start_worker() {
    require_env RAY_HEAD_ADDRESS "host:port of the Ray head's GCS, e.g. ray-head:6379"
    require_port RAY_AGENT_PORT 52365
    optional_count HWD_GPUS_PER_WORKER
    collect_ray_resource_args
    configure_ray_auth
    local gpu_args=()
    if [[ -n "${HWD_GPUS_PER_WORKER:-}" && "$HWD_GPUS_PER_WORKER" != 0 ]]; then
        claim_gpu_slot "$HWD_GPUS_PER_WORKER"
        gpu_args=("--num-gpus=$HWD_GPUS_PER_WORKER")
    fi
    launch worker ray start --block \
        "--address=$RAY_HEAD_ADDRESS" \
        "--dashboard-agent-listen-port=$RAY_AGENT_PORT" \
        --disable-usage-stats \
        "${gpu_args[@]}" \
        "${ray_resource_args[@]}"
}

# url_quote: percent-encodes stdin, so a password with @ : / # survives inside a URI.
url_quote() {
    python3 -c 'import sys, urllib.parse; sys.stdout.write(urllib.parse.quote(sys.stdin.read(), safe=""))'
}

start_mlflow() {
    local build_backend_uri=false
    if [[ -z "${MLFLOW_BACKEND_STORE_URI:-}" ]]; then
        build_backend_uri=true
        require_env POSTGRES_USER "the Postgres user of the MLflow backend store"
        require_secret POSTGRES_PASSWORD "the Postgres password of the MLflow backend store"
        require_env POSTGRES_DB "the Postgres database of the MLflow backend store"
        require_port POSTGRES_PORT 5432
    fi
    require_env MLFLOW_ARTIFACTS_DESTINATION "where the server stores artifacts, e.g. s3://mlflow-artifacts"
    if [[ "$MLFLOW_ARTIFACTS_DESTINATION" == s3://* ]]; then
        require_env MLFLOW_S3_ENDPOINT_URL "the S3 endpoint of the artifact store, e.g. http://minio:9000"
        require_env AWS_ACCESS_KEY_ID "the S3 access key of the artifact store"
        require_secret AWS_SECRET_ACCESS_KEY "the S3 secret key of the artifact store"
    fi
    require_port MLFLOW_PORT 5000
    optional_count MLFLOW_WORKERS
    # The backend URI carries the database password: it goes to MLflow through its
    # environment (MLFLOW_BACKEND_STORE_URI), never on a command line that `ps` shows.
    if $build_backend_uri; then
        local host="${POSTGRES_HOST:-postgres}" user password
        user=$(printf '%s' "$POSTGRES_USER" | url_quote)
        password=$(printf '%s' "$POSTGRES_PASSWORD" | url_quote)
        set_env MLFLOW_BACKEND_STORE_URI \
            "postgresql+psycopg2://$user:$password@$host:$POSTGRES_PORT/$POSTGRES_DB" \
            "postgresql+psycopg2://$user:***@$host:$POSTGRES_PORT/$POSTGRES_DB"
    fi
    # MLflow refuses requests whose Host header is not listed; `mlflow` is the name the Ray
    # nodes use on the compose network, 127.0.0.1/localhost the name the published port uses.
    local allowed_hosts="${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*}"
    # --serve-artifacts: clients upload and download artifacts through this server, so the
    # Ray nodes and the user's laptop need no S3 credentials and MinIO need not be published.
    launch mlflow mlflow server \
        --serve-artifacts \
        "--artifacts-destination=$MLFLOW_ARTIFACTS_DESTINATION" \
        "--host=${MLFLOW_HOST:-0.0.0.0}" \
        "--port=$MLFLOW_PORT" \
        "--workers=${MLFLOW_WORKERS:-2}" \
        "--allowed-hosts=$allowed_hosts"
}

# probe URL: succeeds when URL answers 2xx within 5 s (python: the slim image has no curl).
probe() {
    local url=$1
    if $dry_run; then
        printf 'probe %s\n' "$url"
        return 0
    fi
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$url" \
        2>/dev/null || {
        echo "hwd-entrypoint: unhealthy: $url did not answer 2xx" >&2
        return 1
    }
}

healthcheck() {
    error_status=1
    if [[ ! -f "$ROLE_FILE" ]]; then
        echo "hwd-entrypoint: no long-running role in this container; nothing to probe"
        return 0
    fi
    local role
    role=$(<"$ROLE_FILE")
    case "$role" in
        head)
            require_port RAY_DASHBOARD_PORT 8265
            require_port RAY_AGENT_PORT 52365
            probe "http://127.0.0.1:$RAY_DASHBOARD_PORT/api/gcs_healthz"
            probe "http://127.0.0.1:$RAY_AGENT_PORT/api/local_raylet_healthz"
            ;;
        worker)
            require_port RAY_AGENT_PORT 52365
            probe "http://127.0.0.1:$RAY_AGENT_PORT/api/local_raylet_healthz"
            ;;
        mlflow)
            require_port MLFLOW_PORT 5000
            probe "http://127.0.0.1:$MLFLOW_PORT/health"
            ;;
        *)
            die "$ROLE_FILE holds an unknown role '$role' (expected head, worker or mlflow)"
            ;;
    esac
}

if (($# == 0)); then
    usage
    exit 2
fi

mode=$1
case "$mode" in
    head) start_head ;;
    worker) start_worker ;;
    mlflow) start_mlflow ;;
    healthcheck) healthcheck ;;
    -h | --help | help) usage ;;
    *) launch "" "$@" ;;
esac
