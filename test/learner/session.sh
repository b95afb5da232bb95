#!/usr/bin/env bash
# A learner's first minutes, typed by a new user (see test/learner.test.ts):
# not root, sudo without a password, Node in their home and no other Node.
# Each command's exit code and output go to $R/<name>.{rc,out}; the test
# reads and judges them.
#
# Usage (as that user): bash session.sh RESULTS_DIR REPO_BUNDLE
set -u
R=$1
BUNDLE=$2
step() { # step NAME COMMAND... : run it, keep its output, exit code and seconds taken
  local name=$1 start=$SECONDS
  shift
  "$@" >"$R/$name.out" 2>&1 </dev/null
  echo $? >"$R/$name.rc"
  echo "$name $((SECONDS - start))" >>"$R/times"
  last_mark=$SECONDS
}
mark() { # mark NAME: how long the part before it took, for what is not a step
  echo "$1 $((SECONDS - ${last_mark:-0}))" >>"$R/times"
  last_mark=$SECONDS
}

step node-found sh -c 'command -v node; node --version'
step system-node /usr/bin/node --version
cd ~ || exit 1
step clone git clone --quiet "$BUNDLE" repo
cd ~/repo || exit 1
step npm-ci npm ci --no-audit --no-fund

# README's Start: its first command, then the card's line.
step readme-first npx tsx steps/01-exec run echo hello
step card-piped sh -c 'printf "echo pid=\$\$ uid=\$(id -u)\nexit 0\n" | npx tsx steps/04-pid-proc run sh'

# The card's line in a terminal, as typed: Debian's sudo (use_pty) then
# runs the step on a terminal of its own.
T="tmux -L cfs-learner -f /dev/null"
$T new-session -d -s card -x 120 -y 30 -c ~/repo "npx tsx steps/04-pid-proc run sh; echo \$? > $R/card-tty.rc; sleep 30"
for _ in $(seq 1 120); do
  $T capture-pane -p -t card | grep -q '^/ #' && break
  sleep 0.5
done
$T send-keys -t card -l 'echo pid=$$ uid=$(id -u) host=$(hostname)'
$T send-keys -t card Enter
sleep 1
$T send-keys -t card -l 'exit 7'
$T send-keys -t card Enter
for _ in $(seq 1 60); do
  [ -s "$R/card-tty.rc" ] && break
  sleep 0.5
done
$T capture-pane -p -t card >"$R/card-tty.out"
$T kill-server 2>/dev/null
mark card-tty

# Stopping a container that sudo runs, the two ways a learner does:
# SIGTERM to the `npx tsx` process they see in ps (tsx passes it on, and
# SIGKILLs a child that does not say it got it), and closing the window
# (the kernel hangs the terminal up). Either way, nothing of that container
# may be left: the test looks for its id (from npm run ps while it ran) in
# what clean then finds. Not for "nothing to clean": other tests before
# this one leave stale state files on purpose (a step SIGKILLed).
gone() { # wait until no process runs step 06 any more
  for _ in $(seq 1 40); do pgrep -f 'steps/06-cgroups run' >/dev/null || return 0; sleep 0.5; done
  return 1
}
npx tsx steps/06-cgroups run sleep 1000 >"$R/kill-tsx.out" 2>&1 </dev/null &
for _ in $(seq 1 60); do pgrep -f '^sleep 1000$' >/dev/null && break; sleep 0.5; done
npm run --silent ps -- --format json >"$R/kill-tsx-running.json" 2>/dev/null
kill -TERM "$(pgrep -u "$USER" -f 'node_modules/.bin/tsx steps/06-cgroups')"
wait $!
echo $? >"$R/kill-tsx.rc"
gone
mark kill-tsx
npm run --silent ps -- --all >"$R/kill-tsx-ps.txt" 2>&1
step kill-tsx-clean npm run --silent clean
$T new-session -d -s close -x 120 -y 30 -c ~/repo "npx tsx steps/06-cgroups run sh"
for _ in $(seq 1 120); do
  $T capture-pane -p -t close | grep -q '^/ #' && break
  sleep 0.5
done
npm run --silent ps -- --format json >"$R/window-closed-running.json" 2>/dev/null
$T kill-server
gone
echo $? >"$R/window-closed.rc"
mark window-closed
npm run --silent ps -- --all >"$R/window-closed-ps.txt" 2>&1
step window-closed-clean npm run --silent clean

# Step 09 as root, as README types it, from a home only its owner may enter:
# the launcher is nobody to the host's files. Then rootless.
inside='echo uid=$(id -u) map=$(cat /proc/self/uid_map)'
step userns-root sudo env "PATH=$PATH" npx tsx steps/09-userns run sh -c "$inside"
step userns-rootless npx tsx steps/09-userns run sh -c "$inside"

step doctor npm run doctor
step exercise npm run exercise -- 02
step hint-1 npm run exercise -- 02 --hint
step hint-2 npm run exercise -- 02 --hint
step git-clean git clean -fdxq
step root-owned find ~/repo ~/.local ~/.npm -user root
echo "whole-session $SECONDS" >>"$R/times"
