#!/bin/bash
# Boot a disposable systemd machine: systemd as PID 1 of fresh pid/mount/uts/ipc/cgroup
# namespaces, on an overlay of the host root whose writes land in a tmpfs.
# See shared/TESTBED.md for the recipe and its pitfalls, and tests/testbed/machine.py,
# which drives this script.
#
# usage: boot.sh STATE_DIR [HOST_DIR[:ro] ...]        (as root; runs in the foreground)
#
#   STATE_DIR  scratch dir; gets:
#                boot.pid     pid of this script (host pid namespace)
#                machine.pid  host pid of the machine's PID 1 (systemd)
#                cgroups      host cgroup dirs this script made, one a line
#                mnt/         mount point of the machine's tmpfs (only visible inside)
#   HOST_DIR   host dirs bind-mounted into the machine at the same path (read-write,
#              or read-only with a ":ro" suffix). The overlay holds only the root file
#              system, so anything on another mount (the project tree in CI) must be bound.
#
# env:
#   TESTBED_HOSTNAME  the machine's hostname (default agentd-testbed)
#   TESTBED_CGROUP    name of the sub-cgroup made under the caller's cgroup in every
#                     hierarchy (default agentd-testbed-PID)
#   TESTBED_MASK      units masked in the machine (default: host services and timers
#                     that make no sense in a test machine, see DEFAULT_MASK)
#
# The script returns when the machine powers off, after removing the cgroup dirs it and
# systemd made. On the host it writes only STATE_DIR and those cgroup dirs: everything
# the machine writes lands in the overlay's upper dir on a tmpfs that dies with the mount
# namespace, and the machine gets its own /dev, /run, /tmp, read-only /sys and
# /proc/sys, so systemd-tmpfiles, systemd-sysctl, udev and journald's /dev/log cannot
# reach the host.
set -euo pipefail

SELF=$(readlink -f "$0")
DEFAULT_MASK="getty.target postgresql.service e2scrub_reap.service e2scrub_all.timer \
apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer fstrim.timer man-db.timer \
systemd-pstore.service"

die() { echo "boot.sh: $*" >&2; exit 1; }

# Print "HOST_MOUNT_DIR MOUNT_OPTIONS CGROUP_PATH" for each hierarchy the caller is in.
# MOUNT_OPTIONS is "cgroup2" for the unified hierarchy.
hierarchies() {
    local id ctrls path dir
    while IFS=: read -r id ctrls path; do
        if [[ $id == 0 ]]; then
            if [[ -f /sys/fs/cgroup/unified/cgroup.procs ]]; then
                dir=/sys/fs/cgroup/unified
            else
                dir=/sys/fs/cgroup
            fi
            echo "$dir cgroup2 $path"
        else
            dir=/sys/fs/cgroup/${ctrls#name=}
            [[ -d $dir ]] || { echo "boot.sh: no mount for $ctrls, skipped" >&2; continue; }
            echo "$dir $ctrls $path"
        fi
    done </proc/self/cgroup
}

# ---------------------------------------------------------------------------- outside
outer() {
    [[ $EUID == 0 ]] || die "must run as root"
    [[ $# -ge 1 ]] || die "usage: boot.sh STATE_DIR [HOST_DIR[:ro] ...]"
    local b state
    state=$(readlink -f "$1"); shift
    STATE=$state   # global, for the EXIT trap
    for b in "$@"; do
        [[ -d ${b%:ro} ]] || die "bind source ${b%:ro} is not a directory"
    done
    mkdir -p "$state"
    echo $$ >"$state/boot.pid"
    rm -f "$state/machine.pid"
    : >"$state/cgroups"
    trap 'outer_cleanup "$STATE"' EXIT

    # Move into a sub-cgroup of our own in every hierarchy, so that systemd's cgroup
    # namespace root is a dir we made (never the host's root cgroup) and teardown can
    # remove everything under it.
    local name=${TESTBED_CGROUP:-agentd-testbed-$$} dir opts path sub
    while read -r dir opts path; do
        sub="$dir${path%/}/$name"
        echo "$sub" >>"$state/cgroups"
        mkdir -p "$sub"
        if [[ $opts == *cpuset* ]]; then   # v1 cpuset: a child starts with no cpus/mems
            cat "${sub%/*}/cpuset.cpus" >"$sub/cpuset.cpus"
            cat "${sub%/*}/cpuset.mems" >"$sub/cpuset.mems"
        fi
        echo $$ >"$sub/cgroup.procs"
    done < <(hierarchies)

    set +e
    unshare --pid --fork --mount --uts --ipc --cgroup -- /bin/bash "$SELF" --inner "$state" "$@"
    local rc=$?
    set -e
    echo "boot.sh: machine exited with status $rc" >&2
}

# Leave the sub-cgroups and remove them with everything systemd left in them.
outer_cleanup() {
    local state=$1 sub
    [[ -f $state/cgroups ]] || return 0
    while read -r sub; do
        [[ -d $sub ]] || continue
        echo $$ >"${sub%/*}/cgroup.procs" 2>/dev/null || true
        find "$sub" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ -d $sub ]] && echo "boot.sh: could not remove $sub" >&2
    done <"$state/cgroups"
    return 0
}

# ----------------------------------------------------------------------------- inside
inner() {
    local state=$1; shift
    local host_pid _ S R b src opts

    # /proc is still the host's here, so /proc/self names our host pid; exec keeps it
    # all the way to systemd.
    read -r host_pid _ </proc/self/stat

    mount --make-rprivate /
    hostname "${TESTBED_HOSTNAME:-agentd-testbed}"

    S=$state/mnt
    R=$S/root
    mkdir -p "$S"
    mount -t tmpfs -o mode=755 testbed "$S"
    mkdir "$S/lower" "$S/upper" "$S/work" "$R"
    mount --bind / "$S/lower"       # not --rbind: only the root file system
    mount -t overlay overlay -o "lowerdir=$S/lower,upperdir=$S/upper,workdir=$S/work" "$R"

    # A /dev of its own, so that what systemd makes there (/dev/log, /dev/shm files)
    # does not land in the host's devtmpfs. Device nodes are bound from the host.
    mount -t tmpfs -o mode=755,nosuid dev "$R/dev"
    for b in null zero full random urandom tty; do
        touch "$R/dev/$b"
        mount --bind "/dev/$b" "$R/dev/$b"
    done
    # /dev/net/tun: online agents' user-mode network (slirp4netns) makes its tap there,
    # as on any real machine.
    if [ -c /dev/net/tun ]; then
        mkdir -m 755 "$R/dev/net"
        touch "$R/dev/net/tun"
        mount --bind /dev/net/tun "$R/dev/net/tun"
    fi
    touch "$R/dev/console"   # systemd and services may open it: let it swallow output
    mount --bind /dev/null "$R/dev/console"
    mkdir -m 755 "$R/dev/pts"
    mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$R/dev/pts"
    ln -s pts/ptmx "$R/dev/ptmx"
    mkdir -m 1777 "$R/dev/shm"
    mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
    mkdir -m 1777 "$R/dev/mqueue"
    mount -t mqueue mqueue "$R/dev/mqueue"
    ln -s /proc/self/fd "$R/dev/fd"
    ln -s /proc/self/fd/0 "$R/dev/stdin"
    ln -s /proc/self/fd/1 "$R/dev/stdout"
    ln -s /proc/self/fd/2 "$R/dev/stderr"

    # /proc of the new pid namespace; kernel tunables read-only, as in any container,
    # so that systemd-sysctl and friends cannot change the host kernel.
    mount -t proc proc "$R/proc"
    mount --bind "$R/proc/sys" "$R/proc/sys"
    mount -o remount,bind,ro "$R/proc/sys"
    if [[ -e $R/proc/sysrq-trigger ]]; then
        mount --bind "$R/proc/sysrq-trigger" "$R/proc/sysrq-trigger"
        mount -o remount,bind,ro "$R/proc/sysrq-trigger"
    fi

    # /sys read-only (which also keeps udev from starting), cgroups our own.
    mount --rbind /sys "$R/sys"
    umount -l "$R/sys/fs/cgroup"
    mount -o remount,bind,ro "$R/sys"
    mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgroup "$R/sys/fs/cgroup"
    local dir ctrl path
    while read -r dir opts path; do
        if [[ $opts == cgroup2 ]]; then
            if [[ $dir == /sys/fs/cgroup ]]; then   # pure v2 host
                mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
            else
                mkdir "$R$dir"
                mount -t cgroup2 cgroup2 "$R$dir"
            fi
            continue
        fi
        mkdir "$R$dir"
        if [[ $opts == name=* ]]; then
            mount -t cgroup -o "none,$opts" cgroup "$R$dir"
        else
            mount -t cgroup -o "$opts" cgroup "$R$dir"
            if [[ $opts == *,* ]]; then          # co-mounted: cpu,cpuacct -> cpu, cpuacct
                for ctrl in ${opts//,/ }; do
                    ln -s "${dir##*/}" "$R/sys/fs/cgroup/$ctrl"
                done
            fi
        fi
    done < <(hierarchies)

    mount -t tmpfs -o mode=755,nosuid,nodev run "$R/run"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$R/tmp"

    # Machine identity and masks, written into the overlay's upper dir only.
    echo "${TESTBED_HOSTNAME:-agentd-testbed}" >"$R/etc/hostname"
    tr -d '-' </proc/sys/kernel/random/uuid >"$R/etc/machine-id"
    for b in ${TESTBED_MASK-$DEFAULT_MASK}; do
        ln -sf /dev/null "$R/etc/systemd/system/$b"
    done
    # Debian's tmpfiles rule "D /tmp" empties /tmp at boot. A host dir bound
    # below /tmp (CI may clone there) must never be emptied: keep /tmp and
    # /var/tmp as they are ("d", no removal, no ageing), in this machine only.
    mkdir -p "$R/etc/tmpfiles.d"
    printf 'd /tmp 1777 root root -\nd /var/tmp 1777 root root -\n' >"$R/etc/tmpfiles.d/tmp.conf"

    # Host dirs last, so that no tmpfs above (/run, /tmp) hides them.
    for b in "$@"; do
        src=${b%:ro}
        mkdir -p "$R$src"
        mount --rbind "$src" "$R$src"
        [[ $b == *:ro ]] && mount -o remount,bind,ro "$R$src"
    done

    echo "$host_pid" >"$state/machine.pid"
    cd "$R"
    mkdir -p oldroot
    pivot_root . oldroot
    umount -l /oldroot
    rmdir /oldroot
    cd /

    export container=other
    exec /lib/systemd/systemd --system
}

if [[ ${1-} == --inner ]]; then
    shift
    inner "$@"
else
    outer "$@"
fi
