#!/usr/bin/env bash
# Run a real single-node Apache Cassandra 5.0 on this machine for tests and CI.
# See docs/cassandra.md for the details, measured figures and pitfalls.
set -euo pipefail

readonly CASSANDRA_VERSION=5.0.9
readonly DEP_PLUGIN_VERSION=3.6.1
readonly START_TIMEOUT_S=${LOOKBACK_CASSANDRA_START_TIMEOUT:-120}
readonly STOP_TIMEOUT_S=30

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
readonly SCRIPT_DIR
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd -P)
readonly REPO_ROOT
readonly CACHE_ROOT=${LOOKBACK_CACHE:-${HOME:-/tmp}/.cache/lookback}
readonly DIST_DIR=$CACHE_ROOT/cassandra-$CASSANDRA_VERSION
readonly LIB_DIR=$DIST_DIR/lib

usage() {
    cat <<EOF
Usage: scripts/cassandra.sh COMMAND [OPTIONS]

Runs a real single-node Apache Cassandra $CASSANDRA_VERSION (jars from Maven Central,
cached in \$LOOKBACK_CACHE, default ~/.cache/lookback) on 127.0.0.1 under JDK 17.

Commands:
  fetch                      make sure the jars are cached; print the lib dir
  start [--dir DIR] [--port PORT] [--storage-port PORT] [--heap SIZE] [--paxos v1|v2]
        [--auth] [--tls-keystore PEM]
                             write the config under DIR, start Cassandra in the
                             background and wait (up to ${START_TIMEOUT_S} s) until CQL answers;
                             prints one line:
                             cassandra ready on 127.0.0.1:PORT (pid N, started in X.Y s, RSS M MiB)
  stop [--dir DIR]           SIGTERM, wait up to ${STOP_TIMEOUT_S} s, then SIGKILL (exit 0 if not running)
  status [--dir DIR]         exit 0 and print the address if running and answering, else exit 1
  wipe [--dir DIR]           stop, then delete DIR
  help, --help               print this help

Options:
  --dir DIR                  instance directory (config, data, logs, pid file);
                             default: <repo>/.lookback/cassandra
  --port PORT                CQL native transport port (default 9042)
  --storage-port PORT        inter-node storage port (default 7000); give every
                             instance running at the same time its own ports
  --heap SIZE                JVM heap, -Xms = -Xmx (default 512m)
  --paxos v1|v2              paxos_variant of the lightweight transactions (default v2)
  --auth                     PasswordAuthenticator (the default superuser cassandra/cassandra)
  --tls-keystore PEM         TLS for clients with this PEM file (private key, then the
                             certificate chain); plain-text clients are still accepted
                             (optional: true), so the readiness check works unchanged

Environment:
  LOOKBACK_CACHE                     cache root (default ~/.cache/lookback)
  LOOKBACK_JAVA_HOME                 JDK 17 to use (else JAVA_HOME, java on PATH,
                                     /usr/lib/jvm/*17*; must be Java 17)
  LOOKBACK_CASSANDRA_START_TIMEOUT   seconds to wait for CQL (default 120)
  LOOKBACK_CASSANDRA_JVM_OPTS        extra JVM options (space separated), appended last
EOF
}

die() { echo "cassandra.sh: $*" >&2; exit 1; }
log() { echo "cassandra.sh: $*" >&2; }

# ---------------------------------------------------------------- java ----

java_major() {  # $1 = path to a java binary; prints the major version
    local v
    v=$("$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p' | head -n1) || return 1
    [[ -n $v ]] || return 1
    echo "${v#1.}" | cut -d. -f1
}

find_java() {
    # Cassandra 5.0 supports Java 11 and 17; it cannot run on 24+. We only
    # use (and have only tested) 17, the JPMS options below are for 17.
    local cand
    local -a cands=()
    [[ -n ${LOOKBACK_JAVA_HOME:-} ]] && cands+=("$LOOKBACK_JAVA_HOME/bin/java")
    [[ -n ${JAVA_HOME:-} ]] && cands+=("$JAVA_HOME/bin/java")
    cand=$(command -v java 2>/dev/null || true)
    [[ -n $cand ]] && cands+=("$cand")
    for cand in /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/*17*/ /usr/lib/jvm/*/; do
        [[ -x ${cand%/}/bin/java ]] && cands+=("${cand%/}/bin/java")
    done
    for cand in "${cands[@]}"; do
        [[ -x $cand ]] || continue
        if [[ $(java_major "$cand" 2>/dev/null || true) == 17 ]]; then
            JAVA_BIN=$(readlink -f "$cand")
            JAVA_HOME_17=$(dirname "$(dirname "$JAVA_BIN")")
            return 0
        fi
    done
    die "no Java 17 found (Cassandra 5.0 needs JDK 17 here; set LOOKBACK_JAVA_HOME)"
}

# --------------------------------------------------------------- fetch ----

lib_ok() {
    [[ -f $LIB_DIR/cassandra-all-$CASSANDRA_VERSION.jar ]] && compgen -G "$LIB_DIR/jamm-*.jar" >/dev/null
}

cmd_fetch() {
    if lib_ok; then
        echo "$LIB_DIR"
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found: it is needed once to fetch the Cassandra jars from Maven Central"
    find_java
    mkdir -p "$CACHE_ROOT"
    local tmp
    tmp=$(mktemp -d "$CACHE_ROOT/.cassandra-$CASSANDRA_VERSION.fetch.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    cat >"$tmp/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>lookback.local</groupId>
  <artifactId>cassandra-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$CASSANDRA_VERSION</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>$DEP_PLUGIN_VERSION</version>
      </plugin>
    </plugins>
  </build>
</project>
EOF
    log "fetching cassandra-all $CASSANDRA_VERSION and its dependencies from Maven Central (once)..."
    # A private local repository keeps ~/.m2 clean; it is deleted afterwards.
    if ! JAVA_HOME=$JAVA_HOME_17 mvn -B -q -f "$tmp/pom.xml" -Dmaven.repo.local="$tmp/m2" \
            dependency:copy-dependencies -DincludeScope=runtime \
            -DoutputDirectory="$tmp/dist/lib" >"$tmp/mvn.log" 2>&1; then
        tail -n 40 "$tmp/mvn.log" >&2
        die "mvn dependency:copy-dependencies failed"
    fi
    [[ -f $tmp/dist/lib/cassandra-all-$CASSANDRA_VERSION.jar ]] || die "cassandra-all jar missing after fetch"
    compgen -G "$tmp/dist/lib/jamm-*.jar" >/dev/null || die "jamm jar missing after fetch"
    # Atomic publish: rename the complete directory into place. If another
    # process won the race, keep theirs.
    if ! mv -T "$tmp/dist" "$DIST_DIR" 2>/dev/null; then
        lib_ok || die "could not move the jars into $DIST_DIR"
    fi
    rm -rf "$tmp"
    trap - EXIT
    echo "$LIB_DIR"
}

# ------------------------------------------------------------- helpers ----

parse_opts() {
    DIR=$REPO_ROOT/.lookback/cassandra
    PORT=9042
    STORAGE_PORT=7000
    HEAP=512m
    PAXOS=v2
    AUTH=no
    TLS_KEYSTORE=
    local allow=$1; shift
    while (($#)); do
        case $1 in
            --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
            --dir=*) DIR=${1#*=}; shift ;;
            --auth)
                [[ $allow == start ]] || die "$1 is only valid for start"
                AUTH=yes; shift ;;
            --port|--storage-port|--heap|--paxos|--tls-keystore)
                [[ $allow == start ]] || die "$1 is only valid for start"
                [[ $# -ge 2 ]] || die "$1 needs a value"
                case $1 in
                    --port) PORT=$2 ;;
                    --storage-port) STORAGE_PORT=$2 ;;
                    --heap) HEAP=$2 ;;
                    --paxos) PAXOS=$2 ;;
                    --tls-keystore) TLS_KEYSTORE=$2 ;;
                esac
                shift 2 ;;
            --port=*|--storage-port=*|--heap=*|--paxos=*|--tls-keystore=*)
                [[ $allow == start ]] || die "${1%%=*} is only valid for start"
                set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
            -h|--help) usage; exit 0 ;;
            *) die "unknown option: $1 (see --help)" ;;
        esac
    done
    [[ $PORT =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "bad --port: $PORT"
    [[ $STORAGE_PORT =~ ^[0-9]+$ ]] && ((STORAGE_PORT > 0 && STORAGE_PORT < 65536)) || die "bad --storage-port: $STORAGE_PORT"
    ((PORT != STORAGE_PORT)) || die "--port and --storage-port must differ"
    [[ $HEAP =~ ^[0-9]+[mMgG]$ ]] || die "bad --heap: $HEAP (e.g. 512m, 1g)"
    [[ $PAXOS == v1 || $PAXOS == v2 ]] || die "bad --paxos: $PAXOS (v1 or v2)"
    if [[ -n $TLS_KEYSTORE ]]; then
        [[ -r $TLS_KEYSTORE ]] || die "--tls-keystore: cannot read $TLS_KEYSTORE"
        case $TLS_KEYSTORE in /*) ;; *) TLS_KEYSTORE=$PWD/$TLS_KEYSTORE ;; esac
    fi
    # Absolute path; the directory itself is created only by start.
    case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac
    DIR=${DIR%/}
    if [[ -d $DIR ]]; then DIR=$(cd "$DIR" && pwd -P); fi
    PID_FILE=$DIR/cassandra.pid
}

tcp_open() {  # $1 = port; true if something accepts TCP on 127.0.0.1:$1
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

cql_ping() {  # $1 = port; true if a CQL server answers an OPTIONS request
    # Protocol v4 frame: version 0x04, flags 0, stream 1, opcode OPTIONS (0x05),
    # body length 0. Expect a response header: version 0x84, opcode SUPPORTED (0x06).
    local hdr
    hdr=$(timeout 5 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "\x04\x00\x00\x01\x05\x00\x00\x00\x00" >&3
        head -c 9 <&3 | od -An -tx1 | tr -d " \n"' _ "$1" 2>/dev/null) || return 1
    [[ ${hdr:0:2} == 84 && ${hdr:4:4} == 0001 && ${hdr:8:2} == 06 ]]
}

our_pid() {  # prints the pid of the Cassandra running from $DIR, if any
    [[ -f $PID_FILE ]] || return 1
    local pid
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    local cmdline
    cmdline=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    grep -qx 'org.apache.cassandra.service.CassandraDaemon' <<<"$cmdline" || return 1
    grep -qxF -- "-Dcassandra.storagedir=$DIR/data" <<<"$cmdline" || return 1
    echo "$pid"
}

saved_port() { cat "$DIR/cassandra.port" 2>/dev/null || echo 9042; }

rss_mib() {  # $1 = pid
    awk '/^VmRSS:/ {printf "%d", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo "?"
}

kill_and_wait() {  # $1 = pid; SIGTERM, wait up to STOP_TIMEOUT_S, then SIGKILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < STOP_TIMEOUT_S * 10; i++)); do
        [[ -e /proc/$pid ]] || return 0
        # A zombie (already exited, not yet reaped) counts as stopped.
        [[ $(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null) == Z ]] && return 0
        sleep 0.1
    done
    log "pid $pid still alive after ${STOP_TIMEOUT_S} s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        [[ -e /proc/$pid ]] || return 0
        [[ $(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null) == Z ]] && return 0
        sleep 0.1
    done
}

# --------------------------------------------------------------- start ----

write_config() {
    mkdir -p "$DIR/data/data" "$DIR/data/commitlog" "$DIR/data/saved_caches" \
        "$DIR/data/hints" "$DIR/data/cdc_raw" "$DIR/conf" "$DIR/log" "$DIR/tmp" \
        "$DIR/triggers"
    cat >"$DIR/conf/cassandra.yaml" <<EOF
# Written by scripts/cassandra.sh on every start; edits are overwritten.
cluster_name: lookback-test
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$STORAGE_PORT"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $STORAGE_PORT
start_native_transport: true
native_transport_port: $PORT
commitlog_sync: periodic
commitlog_sync_period: 10000ms
data_file_directories:
  - $DIR/data/data
commitlog_directory: $DIR/data/commitlog
saved_caches_directory: $DIR/data/saved_caches
hints_directory: $DIR/data/hints
cdc_raw_directory: $DIR/data/cdc_raw
auto_snapshot: false
hinted_handoff_enabled: false
storage_compatibility_mode: NONE
# Lightweight transactions: v2 takes 2 round trips for IF NOT EXISTS, v1 4.
paxos_variant: $PAXOS
# Trie memtables with their cells off the JVM heap: fewer allocations and
# comparisons per write and read, less for the young collections to scan.
memtable:
  configurations:
    skiplist:
      class_name: SkipListMemtable
    trie:
      class_name: TrieMemtable
    default:
      inherits: trie
memtable_allocation_type: offheap_objects
# The store writes touches in unlogged batches of up to 40 KB across many
# partitions on purpose (fewer requests); do not warn about every one.
batch_size_warn_threshold: 64KiB
unlogged_batch_across_partitions_warn_threshold: 1000
EOF
    if [[ $AUTH == yes ]]; then
        cat >>"$DIR/conf/cassandra.yaml" <<EOF
# --auth: users and passwords (the default superuser is cassandra/cassandra).
authenticator: PasswordAuthenticator
EOF
    fi
    if [[ -n $TLS_KEYSTORE ]]; then
        cat >>"$DIR/conf/cassandra.yaml" <<EOF
# --tls-keystore: TLS for clients; optional, so plain-text clients still connect.
client_encryption_options:
  enabled: true
  optional: true
  require_client_auth: false
  ssl_context_factory:
    class_name: org.apache.cassandra.security.PEMBasedSslContextFactory
  keystore: $TLS_KEYSTORE
EOF
    fi
    cat >"$DIR/conf/logback.xml" <<EOF
<!-- Written by scripts/cassandra.sh on every start; edits are overwritten. -->
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>$DIR/log/system.log</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.FixedWindowRollingPolicy">
      <fileNamePattern>$DIR/log/system.log.%i</fileNamePattern>
      <minIndex>1</minIndex>
      <maxIndex>3</maxIndex>
    </rollingPolicy>
    <triggeringPolicy class="ch.qos.logback.core.rolling.SizeBasedTriggeringPolicy">
      <maxFileSize>20MB</maxFileSize>
    </triggeringPolicy>
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %logger{0} - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="FILE"/>
  </root>
</configuration>
EOF
    echo "$PORT" >"$DIR/cassandra.port"
    echo "$STORAGE_PORT" >"$DIR/cassandra.storage_port"
}

jvm_options() {  # fills the JVM_OPTS array
    local jamm
    jamm=$(compgen -G "$LIB_DIR/jamm-*.jar" | head -n1)
    JVM_OPTS=(
        # --- conf/jvm-server.options (5.0), general settings ---
        -ea
        -da:net.openhft...
        -XX:+UseThreadPriorities
        -XX:+HeapDumpOnOutOfMemoryError
        "-XX:HeapDumpPath=$DIR/log"
        -Xss256k
        # (-XX:+AlwaysPreTouch left out: it would fault in the whole heap at start.)
        -XX:+UseTLAB
        -XX:+ResizeTLAB
        -XX:+UseNUMA
        -XX:+PerfDisableSharedMem
        -Djava.net.preferIPv4Stack=true
        -Dchronicle.analytics.disable=true
        # --- conf/jvm17-server.options (5.0), G1 ---
        -XX:+UseG1GC
        -XX:+ParallelRefProcEnabled
        -XX:MaxTenuringThreshold=1
        # (-XX:G1HeapRegionSize=16m left out: only 32 regions in a 512m heap;
        #  the JVM picks 1m regions for small heaps.)
        -XX:G1RSetUpdatingPauseTimePercent=5
        -XX:MaxGCPauseMillis=300
        -XX:InitiatingHeapOccupancyPercent=70
        # --- conf/jvm17-server.options (5.0), JPMS ---
        -Djdk.attach.allowAttachSelf=true
        --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
        --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
        --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
        --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
        --add-exports java.sql/java.sql=ALL-UNNAMED
        --add-exports java.base/java.lang.ref=ALL-UNNAMED
        --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
        --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
        --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
        --add-opens java.base/java.lang.module=ALL-UNNAMED
        --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
        --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
        --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
        --add-opens java.base/jdk.internal.math=ALL-UNNAMED
        --add-opens java.base/jdk.internal.module=ALL-UNNAMED
        --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
        --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
        --add-opens java.base/sun.nio.ch=ALL-UNNAMED
        --add-opens java.base/java.io=ALL-UNNAMED
        --add-opens java.base/java.lang.reflect=ALL-UNNAMED
        --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
        --add-opens java.base/java.lang=ALL-UNNAMED
        --add-opens java.base/java.util=ALL-UNNAMED
        --add-opens java.base/java.nio=ALL-UNNAMED
        # --- conf/jvm17-server.options (5.0), Netty ---
        -Dio.netty.tryReflectionSetAccessible=true
        -Dio.netty.allocator.useCacheForAllThreads=true
        -Dio.netty.allocator.maxOrder=11
        # --- what cassandra-env.sh / bin/cassandra would add ---
        "-javaagent:$jamm"
        "-Xms$HEAP"
        "-Xmx$HEAP"
        -XX:+ExitOnOutOfMemoryError
        "-Dcassandra.config=file://$DIR/conf/cassandra.yaml"
        "-Dcassandra.storagedir=$DIR/data"
        "-Dcassandra.logdir=$DIR/log"
        -Dcassandra-foreground=yes
        "-Dlogback.configurationFile=file://$DIR/conf/logback.xml"
        "-Djava.io.tmpdir=$DIR/tmp"
        "-Dcassandra.triggers_dir=$DIR/triggers"
        # --- fast start for a throw-away single test node ---
        -Dcassandra.ring_delay_ms=1000
        -Dcassandra.skip_wait_for_gossip_to_settle=0
        -Dcassandra.superuser_setup_delay_ms=0
        -Dcassandra.unsafesystem=true
        -Dcassandra.skip_sync=true
        -Dcassandra.shutdown_announce_in_ms=0
        # A thread pool worker renames its thread (a syscall) for every batch
        # of tasks it picks up; the names are only for thread dumps.
        -Dcassandra.set_sep_thread_name=false
    )
    # Extra options for debugging, e.g. -XX:NativeMemoryTracking=summary.
    local -a extra=()
    read -r -a extra <<<"${LOOKBACK_CASSANDRA_JVM_OPTS:-}"
    JVM_OPTS+=("${extra[@]}")
}

start_failed() {  # $1 = message, $2 = pid (may be empty)
    log "$1"
    if [[ -s $DIR/log/system.log ]]; then
        echo "---- last 40 lines of $DIR/log/system.log ----" >&2
        tail -n 40 "$DIR/log/system.log" >&2
    fi
    if [[ -s $DIR/log/stdout.log ]]; then
        echo "---- last 40 lines of $DIR/log/stdout.log ----" >&2
        tail -n 40 "$DIR/log/stdout.log" >&2
    fi
    [[ -n ${2:-} ]] && kill_and_wait "$2"
    rm -f "$PID_FILE"
    exit 1
}

cmd_start() {
    parse_opts start "$@"
    local pid
    if pid=$(our_pid); then
        echo "cassandra already running on 127.0.0.1:$(saved_port) (pid $pid, dir $DIR)"
        return 0
    fi
    # Refuse a DIR that is not empty and not ours (wipe deletes DIR).
    if [[ -d $DIR && -n $(ls -A "$DIR") && ! -f $DIR/conf/cassandra.yaml ]]; then
        die "$DIR exists, is not empty and is not a cassandra.sh directory"
    fi
    tcp_open "$PORT" && die "port $PORT on 127.0.0.1 is already in use (use --port)"
    tcp_open "$STORAGE_PORT" && die "port $STORAGE_PORT on 127.0.0.1 is already in use (use --storage-port)"
    find_java
    cmd_fetch >/dev/null
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd -P)
    PID_FILE=$DIR/cassandra.pid
    write_config
    jvm_options
    # One log per start: the readiness check must not see an old run's lines.
    local f
    for f in system.log stdout.log; do
        [[ -f $DIR/log/$f ]] && mv -f "$DIR/log/$f" "$DIR/log/$f.prev"
    done
    # Cassandra calls mlockall(MCL_CURRENT) at start. As root (CAP_IPC_LOCK)
    # that succeeds and faults in and pins the whole heap: +~0.4 GiB RSS and
    # +1.5 s start. Drop that one capability so root behaves like an ordinary
    # user (mlockall fails with ENOMEM: a warning only).
    local -a launch=(setsid)
    if [[ $(id -u) == 0 ]] && command -v setpriv >/dev/null &&
        setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock true 2>/dev/null; then
        launch+=(setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock)
    fi
    local t0 t1
    t0=$(date +%s%N)
    # setsid: own session, so the node outlives this shell and terminal signals.
    # In a non-interactive shell the background child is not a group leader, so
    # setsid (and setpriv) exec java in place and $! is java's pid.
    (cd "$DIR" && exec "${launch[@]}" "$JAVA_BIN" "${JVM_OPTS[@]}" -cp "$LIB_DIR/*" \
        org.apache.cassandra.service.CassandraDaemon \
        </dev/null >"$DIR/log/stdout.log" 2>&1) &
    pid=$!
    echo "$pid" >"$PID_FILE"
    local deadline=$((t0 / 1000000 + START_TIMEOUT_S * 1000))
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            local rc=0
            wait "$pid" || rc=$?
            start_failed "cassandra exited during startup (exit code $rc)" ""
        fi
        if grep -q 'Starting listening for CQL clients' "$DIR/log/system.log" 2>/dev/null && cql_ping "$PORT"; then
            break
        fi
        if (($(date +%s%N) / 1000000 > deadline)); then
            start_failed "cassandra did not answer CQL on 127.0.0.1:$PORT within ${START_TIMEOUT_S} s" "$pid"
        fi
        sleep 0.2
    done
    t1=$(date +%s%N)
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b - a) / 1e9}')
    echo "cassandra ready on 127.0.0.1:$PORT (pid $pid, started in $secs s, RSS $(rss_mib "$pid") MiB)"
}

# ---------------------------------------------------- stop/status/wipe ----

cmd_stop() {
    parse_opts stop "$@"
    local pid
    if ! pid=$(our_pid); then
        rm -f "$PID_FILE"
        echo "cassandra not running (dir $DIR)"
        return 0
    fi
    kill_and_wait "$pid"
    rm -f "$PID_FILE"
    echo "cassandra stopped (pid $pid, dir $DIR)"
}

cmd_status() {
    parse_opts status "$@"
    local pid port
    port=$(saved_port)
    if pid=$(our_pid) && cql_ping "$port"; then
        echo "cassandra running on 127.0.0.1:$port (pid $pid, dir $DIR)"
        return 0
    fi
    if [[ -n ${pid:-} ]]; then
        echo "cassandra process $pid is up but CQL on 127.0.0.1:$port does not answer (dir $DIR)"
    else
        echo "cassandra not running (dir $DIR)"
    fi
    return 1
}

cmd_wipe() {
    parse_opts wipe "$@"
    [[ -d $DIR ]] || { echo "nothing to wipe ($DIR does not exist)"; return 0; }
    case $DIR in
        / | "$REPO_ROOT" | "${HOME:-/}" | "$CACHE_ROOT") die "refusing to delete $DIR" ;;
    esac
    if [[ -n $(ls -A "$DIR") && ! -f $DIR/conf/cassandra.yaml ]]; then
        die "refusing to delete $DIR: it is not a cassandra.sh directory"
    fi
    cmd_stop --dir "$DIR"
    rm -rf -- "$DIR"
    echo "wiped $DIR"
}

main() {
    local cmd=${1:-}
    (($#)) && shift
    case $cmd in
        fetch) (($# == 0)) || die "fetch takes no options"; cmd_fetch ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status "$@" ;;
        wipe) cmd_wipe "$@" ;;
        help | -h | --help) usage ;;
        "") usage >&2; exit 2 ;;
        *) echo "cassandra.sh: unknown command: $cmd" >&2; usage >&2; exit 2 ;;
    esac
}

main "$@"
