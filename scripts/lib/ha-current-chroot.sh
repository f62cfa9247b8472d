# Helpers for scripts/ha-current: the Debian sid root that provides Python 3.14, its mounts, and
# the host settings (resolver, CA certificates, pip configuration) carried into it.
# Sourced, not executed. Every mount made here is recorded in HA_MOUNTS so that one trap can undo
# them all, whatever way the run ends.

HA_SID_PACKAGES="python3.14 python3.14-venv python3.14-dev build-essential ca-certificates"
# Bump the version part when the recipe changes: a root with another stamp is rebuilt.
HA_SID_STAMP_WANT="callflip sid root v1: $HA_SID_PACKAGES"
# Added to a root that lacks them without rebuilding it (its venvs and caches stay): ffmpeg, which
# current Home Assistant's TTS converts every message with (tests/ha speak through TTS).
HA_SID_EXTRAS="ffmpeg"
HA_MOUNTS=()
# A command that in_root runs chroot under (the smoke run puts a network namespace here).
HA_WRAP=()

# The Debian archive apt already uses (never the security archive, which has no sid).
debian_mirror() {
    if [ -n "${CALLFLIP_DEBIAN_MIRROR:-}" ]; then
        echo "$CALLFLIP_DEBIAN_MIRROR"
        return 0
    fi
    local files=() f uri
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 1
    uri=$(awk '
        /^[[:space:]]*#/ { next }
        /^Types:/ { deb = ($0 ~ /[[:space:]]deb([[:space:]]|$)/) }
        /^URIs:/ && deb { for (i = 2; i <= NF; i++) print $i }
        /^deb[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }
    ' "${files[@]}" | grep -E '^https?://[^ ]*/debian/?$' | head -n1)
    [ -n "$uri" ] || return 1
    echo "${uri%/}"
}

# Why the sid root cannot be built here, or nothing when it can (installs debootstrap if needed).
sid_unavailable_reason() {
    [ "$(id -u)" = 0 ] || { echo "no python3.14 on PATH and not root (building the Debian sid root needs root)"; return; }
    [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1 \
        || { echo "no python3.14 on PATH and this is not a Debian system (no sid root possible)"; return; }
    command -v chroot >/dev/null 2>&1 || { echo "no python3.14 on PATH and no chroot command"; return; }
    debian_mirror >/dev/null || { echo "no Debian archive mirror found in the apt sources"; return; }
    if ! command -v debootstrap >/dev/null 2>&1; then
        echo "ha-current: installing debootstrap with apt" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null 2>&1 \
            || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null 2>&1; } \
            || { echo "no python3.14 on PATH and debootstrap could not be installed with apt"; return; }
    fi
}

# Mount points below $1, deepest first (mount points listed by the kernel, so stale ones count too).
mounts_under() {
    local dir=$1
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r
}

# Stop any process still running inside the root $1, then unmount everything below it.
release_root() {
    local dir=$1 pid link m tries
    for tries in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21; do
        local left=0
        for pid in /proc/[0-9]*; do
            link=$(readlink "$pid/root" 2>/dev/null) || continue
            [ "$link" = "$dir" ] || continue
            left=1
            # TERM first; KILL what is still there after about 5 s.
            if [ "$tries" -lt 21 ]; then kill -TERM "${pid#/proc/}" 2>/dev/null || true
            else kill -KILL "${pid#/proc/}" 2>/dev/null || true; fi
        done
        [ "$left" = 1 ] || break
        sleep 0.25
    done
    for m in $(mounts_under "$dir"); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null \
            || echo "ha-current: WARNING: could not unmount $m" >&2
    done
    HA_MOUNTS=()
}

# mount_bind SRC DST [ro]: bind-mount, recording it for release_root.
mount_bind() {
    local src=$1 dst=$2 mode=${3:-rw}
    if [ -d "$src" ]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")" && touch "$dst"; fi
    mount --bind "$src" "$dst"
    HA_MOUNTS+=("$dst")
    if [ "$mode" = ro ]; then mount -o remount,bind,ro "$dst" 2>/dev/null || true; fi
}

# Mount what a program in the root $1 needs: proc, /dev (with /dev/shm for semaphores), /sys.
mount_system() {
    local dir=$1
    mount -t proc proc "$dir/proc"
    HA_MOUNTS+=("$dir/proc")
    mount_bind /dev "$dir/dev"
    if [ -d /dev/shm ]; then mount_bind /dev/shm "$dir/dev/shm"; fi
    mount_bind /sys "$dir/sys" ro
}

# The pip configuration files that apply on the host, as absolute paths.
pip_config_files() {
    local f dirs
    IFS=: read -r -a dirs <<<"${XDG_CONFIG_DIRS:-/etc/xdg}"
    for f in /etc/pip.conf "${dirs[@]/%//pip/pip.conf}" "$HOME/.pip/pip.conf" \
        "${XDG_CONFIG_HOME:-$HOME/.config}/pip/pip.conf" "${PIP_CONFIG_FILE:-}"; do
        [ -n "$f" ] && [ -f "$f" ] && echo "$f"
    done
}

# Absolute local paths and file:// URLs among the words of stdin (a pip configuration).
local_paths() {
    tr -s ' \t=,"'"'"'' '\n' | grep -E '^(file://)?/[^/]' | sed -e 's|^file://||' -e 's|/*$||' || true
}

# Carry the host's resolver, CA certificates and pip configuration into the root $1, so that apt
# and pip inside reach the same mirrors and registries and trust the same certificates. Local
# paths named by the pip configuration (file:// indexes, find-links folders, constraint and
# certificate files) appear inside at the same path: folders bind-mounted read-only, files copied.
sync_host_settings() {
    local dir=$1 f path
    local home_in="$dir/root"
    cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
    if [ -d /usr/local/share/ca-certificates ] && [ -d "$dir/usr/sbin" ]; then
        mkdir -p "$dir/usr/local/share/ca-certificates"
        if ! diff -rq /usr/local/share/ca-certificates "$dir/usr/local/share/ca-certificates" >/dev/null 2>&1; then
            rm -rf "$dir/usr/local/share/ca-certificates"
            cp -a /usr/local/share/ca-certificates "$dir/usr/local/share/ca-certificates"
            if [ -x "$dir/usr/sbin/update-ca-certificates" ]; then
                chroot "$dir" /usr/sbin/update-ca-certificates >/dev/null 2>&1 || true
            fi
        fi
    fi
    local paths=()
    while read -r f; do
        case "$f" in
            "$HOME"/*) mkdir -p "$home_in/$(dirname "${f#"$HOME"/}")" && cp "$f" "$home_in/${f#"$HOME"/}" ;;
            *) mkdir -p "$dir$(dirname "$f")" && cp "$f" "$dir$f" ;;
        esac
        paths+=($(local_paths <"$f"))
    done < <(pip_config_files)
    paths+=($(env | grep -E '^PIP_[A-Z_]+=' | cut -d= -f2- | local_paths))
    for path in "${paths[@]}"; do
        case "$path" in
            /proc | /proc/* | /dev | /dev/* | /sys | /sys/* | "") continue ;;
        esac
        while [ ! -e "$path" ] && [ "$path" != / ]; do path=$(dirname "$path"); done
        [ "$path" != / ] || continue
        # A PEP 503 index folder ("simple") links to its files relative to its parent.
        if [ -d "$path" ] && [ "$(basename "$path")" = simple ]; then path=$(dirname "$path"); fi
        if [ -d "$path" ]; then
            awk -v d="$dir$path" '$2 == d { found = 1 } END { exit !found }' /proc/mounts \
                || mount_bind "$path" "$dir$path" ro
        elif [ -f "$path" ] && ! cmp -s "$path" "$dir$path"; then
            mkdir -p "$dir$(dirname "$path")" && cp -L "$path" "$dir$path"
        fi
    done
}

# Run a command inside the root $1 with a clean environment (plus the host's PIP_* settings).
in_root() {
    local dir=$1
    shift
    local envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
        LANG=C.UTF-8 LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1
        SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)
    local v
    for v in TERM CI TZ; do [ -n "${!v:-}" ] && envs+=("$v=${!v}"); done
    while IFS= read -r v; do envs+=("$v"); done < <(env | grep -E '^PIP_[A-Z_]+=' || true)
    "${HA_WRAP[@]}" chroot "$dir" /usr/bin/env -i "${envs[@]}" "$@"
}

# Build the sid root at $1 from scratch (in $1.new, moved into place only when complete).
build_sid_root() {
    local dir=$1 new="$1.new" mirror started
    mirror=$(debian_mirror)
    started=$SECONDS
    release_root "$new"
    rm -rf --one-file-system "$new"
    echo "ha-current: building the Debian sid root at $dir from $mirror (about 1-2 minutes)" >&2
    if ! debootstrap --variant=minbase sid "$new" "$mirror" >"$new.log" 2>&1; then
        tail -n 20 "$new.log" >&2
        echo "ha-current: debootstrap failed (full log: $new.log)" >&2
        return 1
    fi
    printf '%s\n' 'Acquire::Check-Valid-Until "false";' 'Acquire::Check-Date "false";' \
        >"$new/etc/apt/apt.conf.d/99callflip-snapshot"
    sync_host_settings "$new"
    mount_system "$new"
    # shellcheck disable=SC2086
    if ! in_root "$new" sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends $HA_SID_PACKAGES" \
        >>"$new.log" 2>&1; then
        release_root "$new"
        tail -n 20 "$new.log" >&2
        echo "ha-current: apt-get inside the sid root failed (full log: $new.log)" >&2
        return 1
    fi
    in_root "$new" apt-get clean >/dev/null 2>&1 || true
    in_root "$new" /usr/sbin/update-ca-certificates >/dev/null 2>&1 || true
    release_root "$new"
    echo "$HA_SID_STAMP_WANT" >"$new/.callflip-stamp"
    in_root "$new" /usr/bin/python3.14 --version >>"$new/.callflip-stamp"
    release_root "$dir"
    rm -rf --one-file-system "$dir"
    mv "$new" "$dir"
    rm -f "$new.log"
    echo "ha-current: sid root ready in $((SECONDS - started)) s" >&2
}

# Whether the sid root at $1 is complete and built by the current recipe.
sid_root_ok() {
    local dir=$1
    [ -x "$dir/usr/bin/python3.14" ] && [ -f "$dir/.callflip-stamp" ] \
        && [ "$(head -n1 "$dir/.callflip-stamp")" = "$HA_SID_STAMP_WANT" ]
}

# Install HA_SID_EXTRAS into the root at $1 when one is missing (needs its system mounts).
ensure_sid_extras() {
    local dir=$1 missing=() pkg
    for pkg in $HA_SID_EXTRAS; do
        in_root "$dir" sh -c "command -v $pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    echo "ha-current: installing ${missing[*]} in the sid root" >&2
    in_root "$dir" sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends ${missing[*]}" \
        >"$dir.extras.log" 2>&1 || {
        echo "ha-current: apt-get inside the sid root failed (full log: $dir.extras.log)" >&2
        return 1
    }
    in_root "$dir" apt-get clean >/dev/null 2>&1 || true
    rm -f "$dir.extras.log"
}
