#!/bin/sh
# OCI createContainer hook (in every container's runtime spec of a real node,
# see harness/realnode.sh): bind the node's boot ID file, read-only, over the
# container's /proc/sys/kernel/random/boot_id.
#
#   boot-id-hook.sh BOOT_ID_FILE
#
# runc refuses bind mounts into /proc given in the spec itself; it runs this
# hook in the container's mount namespace after its mounts (its /proc too)
# and before pivot_root, with the working directory at the root file system.
set -eu
src="$1"
cat >/dev/null # the container's state, unused
dst="$PWD/proc/sys/kernel/random/boot_id"
[ -f "$dst" ] || { echo "boot-id-hook: no $dst (cwd $PWD)" >&2; exit 1; }
mount --bind "$src" "$dst"
mount -o remount,bind,ro "$dst"
