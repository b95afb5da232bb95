#!/usr/bin/env bash
# Make a Debian or Ubuntu machine ready for the workshop, as root:
#   1. apt packages: busybox-static (the offline image), iproute2 and
#      nftables (step 08),
#      tmux (the interactive test), procps and util-linux (ps, findmnt, lsns),
#      and the man pages the exercises send you to: man-db (the man command),
#      manpages-dev (sections 2 and 3: unshare(2), execvp(3)) and manpages
#      (sections 5 and 7: proc(5), namespaces(7), cgroups(7));
#   2. Node.js 22.18 or newer, from NodeSource's apt repository, unless one
#      with npm is already there (Ubuntu 24.04 and Debian 12 ship Node 18).
#      The project runs TypeScript with Node's own type stripping, on by
#      default since Node 22.18.0 and 23.6.0 (Node's release notes);
#   3. npm ci in the repository, as the repository's owner;
#   4. an image (npm run rootfs), then npm run doctor, which must be green.
#
# Vagrant runs it (see Vagrantfile); on any other machine:
#   sudo REPO=/path/to/containers-from-scratch bash vagrant/provision.sh
#
# Environment:
#   REPO              the repository (default: the one this script is in, else
#                     /home/vagrant/containers-from-scratch)
#   NODE_MAJOR        Node.js major version to install if needed (default 24,
#                     as in CI; 22 or newer)
#   CFS_IMAGE_SOURCE  busybox or alpine (default: Alpine if it can be
#                     downloaded, else the host's busybox)
#   CFS_HOME          where images and containers live (default
#                     /var/lib/containers-from-scratch)
#
# Idempotent: run it again after pulling changes (`vagrant provision`).
set -euo pipefail

# The oldest Node.js the project runs on: 22.18 (type stripping on by default).
MIN_NODE_MAJOR=22
MIN_NODE_MINOR=18
NODE_MAJOR=${NODE_MAJOR:-24}
CFS_IMAGE_SOURCE=${CFS_IMAGE_SOURCE:-}

log() { printf '\n== %s\n' "$*"; }
die() { printf 'provision: %s\n' "$*" >&2; exit 1; }

# The repository: $REPO, else the one around this script, else the VM's.
find_repo() {
  if [ -n "${REPO:-}" ]; then
    printf '%s\n' "$REPO"
    return
  fi
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  if [ -f "$here/package.json" ]; then
    printf '%s\n' "$here"
  else
    printf '%s\n' /home/vagrant/containers-from-scratch
  fi
}

# The version of the `node` on PATH as "MAJOR MINOR", or nothing if there is
# none.
node_version() {
  local version major minor
  command -v node >/dev/null 2>&1 || return 0
  version=$(node --version 2>/dev/null) || return 0 # v22.18.0
  version=${version#v}
  major=${version%%.*}
  minor=${version#*.}
  minor=${minor%%.*}
  case $major$minor in
    '' | *[!0-9]*) return 0 ;;
  esac
  [ "$major" != "$version" ] || return 0 # no dot: not a version
  printf '%s %s\n' "$major" "$minor"
}

# True if Node MAJOR.MINOR runs the project: 22.18 or newer. Node 23 got
# type stripping by default in 23.6.0, so 23.0 to 23.5 do not count.
node_is_new_enough() {
  local major=$1 minor=$2
  if [ "$major" -eq 23 ]; then
    [ "$minor" -ge 6 ]
  elif [ "$major" -eq "$MIN_NODE_MAJOR" ]; then
    [ "$minor" -ge "$MIN_NODE_MINOR" ]
  else
    [ "$major" -gt "$MIN_NODE_MAJOR" ]
  fi
}

# True if a Node that runs the project, and npm, are both on PATH.
have_node() {
  local version
  version=$(node_version)
  [ -n "$version" ] || return 1
  # shellcheck disable=SC2086 # two words: major and minor
  node_is_new_enough $version && command -v npm >/dev/null 2>&1
}

# apt-get install, waiting for the lock: on a fresh Ubuntu VM,
# unattended-upgrades often holds it for the first minutes after boot.
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "$@"
}

apt_update() {
  apt-get update -q -o DPkg::Lock::Timeout=600
}

# Node from NodeSource's apt repository ("nodistro": the same packages for
# every Debian and Ubuntu release), pinned above the distribution's nodejs.
install_node() {
  log "Node.js $NODE_MAJOR from NodeSource"
  apt_install ca-certificates curl gnupg
  install -d -m 0755 /etc/apt/keyrings
  curl -fsSL https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key \
    | gpg --dearmor --yes -o /etc/apt/keyrings/nodesource.gpg
  printf 'deb [signed-by=/etc/apt/keyrings/nodesource.gpg] https://deb.nodesource.com/node_%s.x nodistro main\n' \
    "$NODE_MAJOR" >/etc/apt/sources.list.d/nodesource.list
  printf 'Package: nodejs\nPin: origin deb.nodesource.com\nPin-Priority: 600\n' \
    >/etc/apt/preferences.d/nodesource
  apt_update
  apt_install nodejs
  hash -r
  have_node || die "installed nodejs $NODE_MAJOR from NodeSource, but there is still no Node $MIN_NODE_MAJOR.$MIN_NODE_MINOR or newer with npm on PATH"
}

# Warn if the man pages are still missing after apt: a minimized system (the
# ubuntu container image, for one) has a path-exclude line for /usr/share/man
# in /etc/dpkg/dpkg.cfg.d/, so packages install without their pages. The steps
# do not need them; the exercises point to them.
check_man_pages() {
  local page missing=()
  for page in '2 unshare' '3 execvp' '7 namespaces' '7 cgroups'; do
    # shellcheck disable=SC2086 # two words: section and name
    man -w $page >/dev/null 2>&1 || missing+=("$page")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  printf 'provision: warning: no man page for: %s\n' "${missing[*]}" >&2
  if grep -qs '^path-exclude=/usr/share/man' /etc/dpkg/dpkg.cfg.d/*; then
    printf 'provision: a path-exclude line in /etc/dpkg/dpkg.cfg.d/ keeps man pages out (a minimized system)\n' >&2
  fi
  return 0 # a warning only
}

# Run a command as the owner of the repository, so node_modules belongs to
# the user who runs the steps without sudo (vagrant in the VM).
as_owner() {
  local owner
  owner=$(stat -c %U "$REPO")
  if [ "$owner" = root ] || [ "$owner" = UNKNOWN ]; then
    "$@"
  else
    runuser -u "$owner" -- "$@"
  fi
}

# Step 09 runs rootless: a user makes a user namespace. Ubuntu 23.10 and
# newer let AppArmor refuse that to unconfined programs
# (kernel.apparmor_restrict_unprivileged_userns = 1, the default in 24.04);
# some Debian kernels have kernel.unprivileged_userns_clone. In the
# workshop's VM, allow it, in a file of our own that says why.
allow_user_namespaces() {
  local conf=/etc/sysctl.d/60-cfs-userns.conf lines=''
  [ -e /proc/sys/kernel/apparmor_restrict_unprivileged_userns ] && lines+=$'kernel.apparmor_restrict_unprivileged_userns = 0\n'
  [ -e /proc/sys/kernel/unprivileged_userns_clone ] && lines+=$'kernel.unprivileged_userns_clone = 1\n'
  [ -n "$lines" ] || return 0
  log "user namespaces for users (step 09 rootless): $conf"
  printf '# containers-from-scratch: step 09 runs rootless, in a user namespace a user makes.\n%s' "$lines" >"$conf"
  sysctl -q -p "$conf"
}

main() {
  local started=$SECONDS
  [ "$(id -u)" -eq 0 ] || die "run me as root: sudo bash $0"
  command -v apt-get >/dev/null 2>&1 || die "this script knows Debian and Ubuntu (apt-get) only"
  REPO=$(find_repo)
  [ -f "$REPO/package.json" ] || die "no repository at $REPO (set REPO=/path/to/containers-from-scratch)"
  export REPO

  log "apt packages"
  apt_update
  apt_install busybox-static iproute2 nftables tmux procps util-linux \
    man-db manpages manpages-dev
  check_man_pages

  if have_node; then
    log "Node.js: $(node --version) is already installed, npm $(npm --version); skipping"
  else
    [ "$NODE_MAJOR" -ge "$MIN_NODE_MAJOR" ] 2>/dev/null \
      || die "NODE_MAJOR=$NODE_MAJOR: the project needs Node $MIN_NODE_MAJOR.$MIN_NODE_MINOR or newer"
    install_node
  fi

  allow_user_namespaces

  log "npm ci in $REPO (as $(stat -c %U "$REPO"))"
  # Start clean: an older checkout's steps, run as root, compiled into
  # node_modules/.cache, which the owner cannot remove.
  rm -rf "$REPO/node_modules"
  # node_modules exactly as package-lock.json says, for this machine's
  # platform (koffi's, esbuild's and tsc's Linux binaries).
  (cd "$REPO" && as_owner npm ci --no-audit --no-fund)

  log "image"
  # As root: images go to /var/lib/containers-from-scratch (or $CFS_HOME).
  # Without --source: an existing image, else Alpine, else busybox.
  (cd "$REPO" && npm run rootfs -- ${CFS_IMAGE_SOURCE:+--source "$CFS_IMAGE_SOURCE"})

  log "doctor"
  (cd "$REPO" && npm run doctor)

  log "ready in $((SECONDS - started)) s: npx tsx steps/01-exec run echo hello (in $REPO)"
}

# Run only when executed, so a test can source this file and call the functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
